// SPDX-License-Identifier: GPL-2.0-only
/* freplace test component the verifier must reject: reads the packet
 * without a bounds check. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int fr_bad(struct xdp_md *ctx)
{
	__u8 *p = (void *)(long)ctx->data;

	return p[100] ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
