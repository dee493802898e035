/* Known answers through io-pkt's /dev/crypto (rmgr/include/io_pkt_crypto.h).
 * usage: crypto_kat DEVICE   (or: crypto_kat --abi: print the ioctl numbers and sizes)
 * Prints "ok NAME" per case; exits 1 at the first mismatch. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io_pkt_crypto.h"

static int fd;

static void unhex(const char *h, unsigned char *out, size_t *n) {
	size_t i = 0;
	for (; h[2 * i] && h[2 * i + 1]; i++) {
		unsigned v;
		sscanf(h + 2 * i, "%2x", &v);
		out[i] = (unsigned char)v;
	}
	*n = i;
}

static void fail(const char *what) {
	fprintf(stderr, "FAIL %s (errno %d %s)\n", what, errno, strerror(errno));
	exit(1);
}

static void same(const char *what, const unsigned char *a, const unsigned char *b, size_t n) {
	if (memcmp(a, b, n) != 0) {
		errno = 0;
		fail(what);
	}
}

static uint32_t session(uint32_t cipher, const char *keyhex, uint32_t mac, const char *mackeyhex) {
	static unsigned char key[64], mackey[128];
	size_t kl = 0, ml = 0;
	struct session_op s;
	memset(&s, 0, sizeof s);
	if (keyhex) unhex(keyhex, key, &kl);
	if (mackeyhex) unhex(mackeyhex, mackey, &ml);
	s.cipher = cipher; s.keylen = (uint32_t)kl; s.key = key;
	s.mac = mac; s.mackeylen = (int)ml; s.mackey = mackey;
	if (ioctl(fd, CIOCGSESSION, &s) < 0) fail("CIOCGSESSION");
	return s.ses;
}

static void gcm(void) {
	/* GCM spec (McGrew/Viega) test case 4 = RFC 4106 salt cafebabe, IV facedbaddecaf888 */
	unsigned char p[64], c[64], a[32], iv[12], t[16], out[64], tag[16];
	size_t pl, cl, al, ivl, tl;
	unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39", p, &pl);
	unhex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091", c, &cl);
	unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", a, &al);
	unhex("cafebabefacedbaddecaf888", iv, &ivl);
	unhex("5bc94fbc3221a5db94fae95ae7121a47", t, &tl);
	uint32_t ses = session(CRYPTO_AES_GCM_16, "feffe9928665731c6d6a8f9467308308", 0, NULL);
	struct crypt_aead op = {.ses = ses, .op = COP_ENCRYPT, .len = (unsigned)pl, .aadlen = (unsigned)al,
	                        .ivlen = 12, .src = p, .dst = out, .aad = a, .tag = tag, .iv = iv};
	if (ioctl(fd, CIOCCRYPTAEAD, &op) < 0) fail("gcm encrypt");
	same("gcm ciphertext", out, c, cl);
	same("gcm tag", tag, t, 16);
	printf("ok gcm-encrypt\n");
	op.op = COP_DECRYPT; op.src = c; op.dst = out; op.tag = t;
	memset(out, 0, sizeof out);
	if (ioctl(fd, CIOCCRYPTAEAD, &op) < 0) fail("gcm decrypt");
	same("gcm plaintext", out, p, pl);
	printf("ok gcm-decrypt\n");
	t[0] ^= 1;
	if (ioctl(fd, CIOCCRYPTAEAD, &op) == 0 || errno != EBADMSG) fail("gcm bad tag not EBADMSG");
	printf("ok gcm-badtag\n");
	if (ioctl(fd, CIOCFSESSION, &ses) < 0) fail("CIOCFSESSION");
	if (ioctl(fd, CIOCCRYPTAEAD, &op) == 0 || errno != EINVAL) fail("freed session usable");
	printf("ok gcm-free\n");
}

static void hmac(const char *name, uint32_t alg, const char *keyhex, const char *msg,
                 const char *want, size_t wl) {
	unsigned char w[64], mac[64];
	size_t n;
	unhex(want, w, &n);
	uint32_t ses = session(0, NULL, alg, keyhex);
	struct crypt_op op = {.ses = ses, .op = COP_ENCRYPT, .len = (unsigned)strlen(msg),
	                      .src = (void *)msg, .mac = mac};
	if (ioctl(fd, CIOCCRYPT, &op) < 0) fail(name);
	same(name, mac, w, wl);
	ioctl(fd, CIOCFSESSION, &ses);
	printf("ok %s\n", name);
}

static void cbc_ctr(void) {
	unsigned char iv[16], p[32], c[32], out[32];
	size_t n;
	unhex("000102030405060708090a0b0c0d0e0f", iv, &n);
	unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51", p, &n);
	unhex("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2", c, &n);
	uint32_t ses = session(CRYPTO_AES_CBC, "2b7e151628aed2a6abf7158809cf4f3c", 0, NULL);
	struct crypt_op op = {.ses = ses, .op = COP_ENCRYPT, .len = 32, .src = p, .dst = out, .iv = iv};
	if (ioctl(fd, CIOCCRYPT, &op) < 0) fail("cbc encrypt");
	same("cbc ciphertext", out, c, 32);
	op.op = COP_DECRYPT; op.src = c;
	if (ioctl(fd, CIOCCRYPT, &op) < 0) fail("cbc decrypt");
	same("cbc plaintext", out, p, 32);
	op.len = 17;
	if (ioctl(fd, CIOCCRYPT, &op) == 0 || errno != EINVAL) fail("cbc partial block accepted");
	printf("ok aes-cbc\n");
	unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", iv, &n);
	unhex("874d6191b620e3261bef6864990db6ce", c, &n);
	uint32_t ctr = session(CRYPTO_AES_CTR, "2b7e151628aed2a6abf7158809cf4f3c", 0, NULL);
	struct crypt_op o2 = {.ses = ctr, .op = COP_ENCRYPT, .len = 16, .src = p, .dst = out, .iv = iv};
	if (ioctl(fd, CIOCCRYPT, &o2) < 0) fail("ctr");
	same("ctr ciphertext", out, c, 16);
	printf("ok aes-ctr\n");
}

int main(int argc, char **argv) {
	if (argc == 2 && strcmp(argv[1], "--abi") == 0) {
		printf("CIOCGSESSION %#lx %zu\n", (unsigned long)CIOCGSESSION, sizeof(struct session_op));
		printf("CIOCFSESSION %#lx 4\n", (unsigned long)CIOCFSESSION);
		printf("CIOCCRYPT %#lx %zu\n", (unsigned long)CIOCCRYPT, sizeof(struct crypt_op));
		printf("CIOCCRYPTAEAD %#lx %zu\n", (unsigned long)CIOCCRYPTAEAD, sizeof(struct crypt_aead));
		return 0;
	}
	if (argc != 2) return 2;
	fd = open(argv[1], O_RDWR);
	if (fd < 0) fail("open");
	gcm();
	hmac("hmac-sha256-rfc4231-1", CRYPTO_SHA2_256_HMAC, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
	     "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", 32);
	hmac("hmac-sha256-rfc4231-2", CRYPTO_SHA2_256_HMAC, "4a656665", "what do ya want for nothing?",
	     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", 32);
	hmac("hmac-sha512-rfc4231-1", CRYPTO_SHA2_512_HMAC, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
	     "Hi There", "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854", 64);
	cbc_ctr();
	close(fd);
	return 0;
}
