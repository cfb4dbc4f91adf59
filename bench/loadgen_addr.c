/* loadgen_addr.c: the load generator's ADDRESS argument (bench/loadgen.c).
 *
 * tcp:HOST:PORT and udp:HOST:PORT (HOST an IPv4 literal, or an IPv6 one in
 * brackets: tcp:[::1]:PORT), unix:PATH and unixdgram:PATH.  A bad one ends
 * the program, saying why. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include "loadgen.h"

void parse_address(const char *text, struct target *to) {
    memset(to, 0, sizeof *to);
    const char *colon = strchr(text, ':');
    if (!colon) fail("an address needs a scheme", text);
    size_t scheme = (size_t)(colon - text);
    const char *rest = colon + 1;
    if ((scheme == 3 && !strncmp(text, "tcp", 3)) || (scheme == 3 && !strncmp(text, "udp", 3))) {
        to->dgram = text[0] == 'u';
        char host[128];
        const char *port = strrchr(rest, ':');
        if (!port || (size_t)(port - rest) >= sizeof host) fail("bad address", text);
        memcpy(host, rest, (size_t)(port - rest));
        host[port - rest] = 0;
        char *h = host;
        if (h[0] == '[') { h++; h[strlen(h) - 1] = 0; }
        strcpy(to->host, h);
        struct sockaddr_in *v4 = (struct sockaddr_in *)&to->addr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&to->addr;
        if (inet_pton(AF_INET, h, &v4->sin_addr) == 1) to->family = AF_INET, to->addrlen = sizeof *v4;
        else if (inet_pton(AF_INET6, h, &v6->sin6_addr) == 1) to->family = AF_INET6, to->addrlen = sizeof *v6;
        else fail("not an IP literal", h);
        v4->sin_family = (sa_family_t)to->family;  /* sin_family and sin_port sit where sin6_family and sin6_port do */
        v4->sin_port = htons((uint16_t)atoi(port + 1));
    } else if ((scheme == 4 && !strncmp(text, "unix", 4)) || (scheme == 9 && !strncmp(text, "unixdgram", 9))) {
        to->dgram = scheme == 9;
        struct sockaddr_un *un = (struct sockaddr_un *)&to->addr;
        if (strlen(rest) >= sizeof un->sun_path) fail("path too long", rest);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, rest);
        to->family = AF_UNIX, to->addrlen = sizeof *un;
    } else fail("unknown scheme", text);
}
