/* A program that uses TCP urgent data on its own socket: SIGURG's default is to ignore it. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &n))
        return 2;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a))
        return 3;
    int s = accept(l, 0, 0);
    if (s < 0 || fcntl(s, F_SETOWN, getpid()))
        return 4;
    struct sigaction old;
    sigaction(SIGURG, 0, &old);
    printf("SIGURG %s\n", old.sa_handler == SIG_DFL ? "default" : "handled");
    if (send(c, "u", 1, MSG_OOB) != 1)
        return 5;
    struct pollfd p = {.fd = s, .events = POLLPRI};
    if (poll(&p, 1, 10000) != 1)
        return 6;
    char b = 0;
    if (recv(s, &b, 1, MSG_OOB) != 1)
        return 7;
    printf("urgent byte '%c' received\n", b);
    fflush(stdout);
    return 0;
}
