/*
 * io_pkt_crypto.h - io-pkt's /dev/crypto: NetBSD's cryptodev(4) interface.
 *
 * Every io-pkt serves $SOCK/dev/crypto (docs/crypto.md). The structs are NetBSD's
 * <crypto/cryptodev.h> (session_op, crypt_op) and FreeBSD's crypt_aead; the ioctl
 * numbers are NetBSD's/FreeBSD's ('c', 101..109) encoded with Linux's _IOWR/_IOW, which
 * is what FUSE passes to the stack:
 *
 *     int fd = open("/dev/crypto", O_RDWR);
 *     struct session_op s = { .cipher = CRYPTO_AES_GCM_16, .keylen = 16, .key = key };
 *     ioctl(fd, CIOCGSESSION, &s);                   // s.ses is the session
 *     struct crypt_aead a = { .ses = s.ses, .op = COP_ENCRYPT, .len = n, .src = pt,
 *                             .dst = ct, .aadlen = 8, .aad = aad, .tag = tag,
 *                             .ivlen = 12, .iv = iv };
 *     ioctl(fd, CIOCCRYPTAEAD, &a);                  // EBADMSG: the tag did not verify
 *     ioctl(fd, CIOCFSESSION, &s.ses);
 *
 * CIOCCRYPT: a cipher session en/decrypts len bytes of src into dst with iv (the cipher's
 * IV: 16 bytes for AES-CBC and AES-CTR's whole counter block, 12 for GCM); an HMAC
 * session writes the full digest to mac (as NetBSD, decryption computes the MAC, it does
 * not check it); a cipher + HMAC session encrypts then MACs the ciphertext. An AEAD
 * session through CIOCCRYPT has no AAD and its tag at mac (checked on decryption).
 *
 * Access: sysctl kern.usercrypto=0 makes open fail (ENXIO); kern.cryptodevallowsoft
 * <= 0 allows only sessions on an offload engine (else CIOCGSESSION: EINVAL).
 * The Python twin is stack/crypto/cryptodev.py; the tests check the two agree.
 */
#ifndef IO_PKT_CRYPTO_H
#define IO_PKT_CRYPTO_H

#include <stdint.h>
#include <sys/ioctl.h>

/* algorithms: NetBSD's numbers; 34.. are io-pkt's own (NetBSD's cryptodev lacks them) */
#define CRYPTO_SHA1_HMAC          7
#define CRYPTO_AES_CBC           11
#define CRYPTO_SHA2_256_HMAC     15
#define CRYPTO_SHA2_384_HMAC     24
#define CRYPTO_SHA2_512_HMAC     25
#define CRYPTO_AES_CTR           27
#define CRYPTO_AES_GCM_16        29
#define CRYPTO_AES_CCM_16        34
#define CRYPTO_CHACHA20_POLY1305 35
#define CRYPTO_AES_KEYWRAP       36

#define COP_ENCRYPT 1
#define COP_DECRYPT 2

struct session_op {
	uint32_t cipher;    /* e.g. CRYPTO_AES_CBC */
	uint32_t mac;       /* e.g. CRYPTO_SHA2_256_HMAC */
	uint32_t comp_alg;  /* must be 0 */
	uint32_t keylen;    /* cipher key */
	void *key;
	int mackeylen;      /* mac key */
	void *mackey;
	uint32_t ses;       /* returns: session number */
};

struct crypt_op {
	uint32_t ses;
	uint16_t op;        /* COP_ENCRYPT or COP_DECRYPT */
	uint16_t flags;
	unsigned int len;   /* src length */
	void *src, *dst;
	void *mac;          /* must be big enough for the chosen MAC */
	void *iv;
	unsigned int dst_len;  /* returns: bytes written to dst */
};

struct crypt_aead {
	uint32_t ses;
	uint16_t op;
	uint16_t flags;
	unsigned int len;
	unsigned int aadlen;
	unsigned int ivlen;
	const void *src;
	void *dst;
	const void *aad;
	void *tag;          /* 16 bytes for GCM and ChaCha20-Poly1305 */
	const void *iv;
};

#define CIOCGSESSION  _IOWR('c', 101, struct session_op)
#define CIOCFSESSION  _IOW('c', 102, uint32_t)
#define CIOCCRYPT     _IOWR('c', 103, struct crypt_op)
#define CIOCCRYPTAEAD _IOWR('c', 109, struct crypt_aead)

#endif /* IO_PKT_CRYPTO_H */
