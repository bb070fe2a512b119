/*
 * IP literals to socket addresses, without a resolver: "10.0.0.5", "::1",
 * "[fd00::5]". Shared by the client transport, the HTTP endpoint and the
 * simulator, which all refuse to look names up on the loop.
 */
#ifndef AMI_UTIL_SOCKADDR_H
#define AMI_UTIL_SOCKADDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Fill ss (and *len) from an IPv4 or IPv6 literal, brackets allowed. */
bool ami_sockaddr_from_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);

#endif
