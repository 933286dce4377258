// SPDX-License-Identifier: GPL-2.0
/* Test component the verifier rejects: reads the packet without a bounds check. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_bad(struct xdp_md *ctx)
{
	unsigned char *p = (unsigned char *)(long)ctx->data;
	return p[20] == 1 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
