/* SPDX-License-Identifier: GPL-2.0-only */
/* tinyfw's own definitions, shared with its (imaginary) userspace. */
#ifndef TINYFW_H
#define TINYFW_H

#include <linux/types.h>

#define TINYFW_MAX_PORTS 256

/* value of deny_ports: what was dropped for that UDP destination port */
struct tinyfw_hits {
	__u64 packets;
	__u64 bytes;
};

#endif
