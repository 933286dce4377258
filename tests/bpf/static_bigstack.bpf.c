// SPDX-License-Identifier: GPL-2.0
/* Test component whose call chain needs more than 512 bytes of stack. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) __u32 deep(__u32 seed)
{
	volatile __u8 buf[256];
	__u32 i, sum = 0;

	for (i = 0; i < sizeof(buf); i += 8)
		buf[i] = (__u8)(i + seed);
	for (i = 0; i < sizeof(buf); i += 64)
		sum += buf[i];
	return sum;
}

SEC("xdp")
int xdp_bigstack(struct xdp_md *ctx)
{
	volatile __u8 buf[320];
	__u32 i, sum = 0;

	for (i = 0; i < sizeof(buf); i += 8)
		buf[i] = (__u8)i;
	for (i = 0; i < sizeof(buf); i += 64)
		sum += buf[i];
	return sum + deep(sum) == 12345 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
