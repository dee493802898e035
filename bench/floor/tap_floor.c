/* The TAP floor (python -m bench, the ping rows): the least any user-space stack on a TAP
 * can do. Answers ARP requests for its address and ICMP echo requests (IPv4) to it, with
 * one blocking read() and one write() per frame, nothing else: no poll, no timers, no
 * offloads (no virtio header), no queueing.
 *
 *     tap_floor IFNAME IPV4 [MAC]
 *
 * Creates the TAP IFNAME (IFF_TAP | IFF_NO_PI) in the calling namespace, prints "ready"
 * on stdout, then serves until killed (the TAP goes with it). The caller configures the
 * kernel side of the TAP (address, link up).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static uint16_t csum(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    for (; n > 1; p += 2, n -= 2)
        s += (uint32_t)p[0] << 8 | p[1];
    if (n)
        s += (uint32_t)p[0] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s IFNAME IPV4 [MAC]\n", argv[0]);
        return 2;
    }
    uint8_t mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0xfe};
    uint8_t ip[4];
    if (inet_pton(AF_INET, argv[2], ip) != 1) {
        fprintf(stderr, "bad address %s\n", argv[2]);
        return 2;
    }
    if (argc > 3 && sscanf(argv[3], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1],
                           &mac[2], &mac[3], &mac[4], &mac[5]) != 6) {
        fprintf(stderr, "bad MAC %s\n", argv[3]);
        return 2;
    }
    int fd = open("/dev/net/tun", O_RDWR);
    if (fd < 0) {
        perror("/dev/net/tun");
        return 1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror("TUNSETIFF");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    uint8_t f[65536];
    for (;;) {
        ssize_t n = read(fd, f, sizeof f);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("read");
            return 1;
        }
        if (n < 14)
            continue;
        uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
        if (type == 0x0806 && n >= 42) {
            uint8_t *a = f + 14; /* htype 1, ptype 0x0800, hlen 6, plen 4, op 1 */
            if (a[0] != 0 || a[1] != 1 || a[2] != 8 || a[3] != 0 || a[7] != 1 ||
                memcmp(a + 24, ip, 4) != 0)
                continue;
            a[7] = 2;
            memcpy(a + 18, a + 8, 10); /* target := sender (MAC + IP) */
            memcpy(a + 8, mac, 6);
            memcpy(a + 14, ip, 4);
        } else if (type == 0x0800 && n >= 34) {
            uint8_t *h = f + 14;
            size_t ihl = (size_t)(h[0] & 0x0f) * 4;
            size_t tot = (size_t)(h[2] << 8 | h[3]);
            if ((h[0] >> 4) != 4 || ihl < 20 || tot > (size_t)n - 14 || tot < ihl + 8 ||
                h[9] != 1 || memcmp(h + 16, ip, 4) != 0 || (h[6] & 0x3f) || h[7])
                continue; /* not IPv4 ICMP to us, or a fragment */
            uint8_t *icmp = h + ihl;
            if (icmp[0] != 8)
                continue;
            memcpy(h + 16, h + 12, 4); /* swapping the addresses keeps the IP checksum */
            memcpy(h + 12, ip, 4);
            icmp[0] = 0;
            icmp[2] = icmp[3] = 0;
            uint16_t c = csum(icmp, tot - ihl);
            icmp[2] = (uint8_t)(c >> 8);
            icmp[3] = (uint8_t)c;
            n = (ssize_t)(14 + tot);
        } else {
            continue;
        }
        memcpy(f, f + 6, 6); /* Ethernet: back to the sender, from us */
        memcpy(f + 6, mac, 6);
        if (write(fd, f, (size_t)n) < 0 && errno != EINTR) {
            perror("write");
            return 1;
        }
    }
}
