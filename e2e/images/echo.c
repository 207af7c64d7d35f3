/* A tiny HTTP server for the real-cluster tests: every request on PORT
 * (default 8080, IPv6 and IPv4) is answered with the Pod's and the node's
 * names (POD_NAME, NODE_NAME from the downward API), so a client sees which
 * Pod on which node served it. HTTP/1.0 close; each connection is served by
 * a child of its own, as any real server serves connections concurrently:
 * one connection whose request never comes (its packets went to another
 * node when an IP moved) must not hold up every later client of this Pod.
 * A child process answers every UDP datagram on the same port with the same
 * names (a Service with TCP and UDP on one port).
 * On SIGTERM it goes on serving for two seconds (what a well-behaved app or
 * a preStop hook does while kube-proxy drops the Pod), then exits.
 * Built with `cc -static` into the test image localhost/echo. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void stopping(int sig) {
  (void)sig;
  signal(SIGALRM, stop);
  alarm(2);
}

static const char *env(const char *name) {
  const char *value = getenv(name);
  return value ? value : "unknown";
}

int main(void) {
  signal(SIGTERM, stopping);
  signal(SIGINT, stop);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN); /* connection children reap themselves */
  int port = atoi(getenv("PORT") ? getenv("PORT") : "8080");
  int server = socket(AF_INET6, SOCK_STREAM, 0);
  int no = 0, yes = 1;
  setsockopt(server, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof no);
  setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  struct sockaddr_in6 address = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
  if (bind(server, (struct sockaddr *)&address, sizeof address) != 0 || listen(server, 128) != 0) {
    perror("echo: listen");
    return 1;
  }
  char body[512];
  int length = snprintf(body, sizeof body, "pod=%s node=%s\n", env("POD_NAME"), env("NODE_NAME"));
  char response[1024];
  int total = snprintf(response, sizeof response,
                       "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                       "Connection: close\r\n\r\n%s",
                       length, body);
  fprintf(stderr, "echo: serving on %d as %s", port, body);
  if (fork() == 0) {
    int udp = socket(AF_INET6, SOCK_DGRAM, 0);
    setsockopt(udp, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof no);
    if (bind(udp, (struct sockaddr *)&address, sizeof address) != 0) {
      perror("echo: udp");
      _exit(1);
    }
    for (;;) {
      char datagram[512];
      struct sockaddr_in6 from;
      socklen_t size = sizeof from;
      if (recvfrom(udp, datagram, sizeof datagram, 0, (struct sockaddr *)&from, &size) < 0)
        continue;
      if (sendto(udp, body, length, 0, (struct sockaddr *)&from, size) < 0) {
        /* the client went away: nothing to do */
      }
    }
  }
  for (;;) {
    int client = accept(server, NULL, NULL);
    if (client < 0) continue;
    if (fork() != 0) {
      close(client);
      continue;
    }
    close(server);
    struct timeval timeout = {.tv_sec = 2};
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    char request[2048];
    ssize_t got = 0, n;
    while (got < (ssize_t)sizeof request - 1 &&
           (n = read(client, request + got, sizeof request - 1 - got)) > 0) {
      got += n;
      request[got] = 0;
      if (strstr(request, "\r\n\r\n") || strstr(request, "\n\n")) break;
    }
    if (write(client, response, total) < 0) {
      /* the client went away: nothing to do */
    }
    close(client);
    _exit(0);
  }
}
