// SPDX-License-Identifier: GPL-2.0
/* Test component with a 480-byte frame. Called, it fits any chain; spliced,
 * the root's frame grows by as much, and with a neighbour's subprogram call on
 * top the total passes the kernel's 512 bytes, so it must be called. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int splice_bigframe(struct xdp_md *ctx)
{
	char buf[480];
	__u32 i = ctx->ingress_ifindex & 255;

	__builtin_memset(buf, 0, sizeof(buf));
	buf[i] = 1;
	asm volatile("" ::: "memory");
	return buf[(i + 1) & 255] ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
