// SPDX-License-Identifier: GPL-2.0-only
/* freplace test component that changes packet data with a helper: strips
 * 4 bytes at the head and writes a marker. Kernels >= 6.13 only allow this
 * in place of a function that may change packet data itself. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int fr_adjust(struct xdp_md *ctx)
{
	__u8 *p;

	if (bpf_xdp_adjust_head(ctx, 4))
		return XDP_ABORTED;
	p = (void *)(long)ctx->data;
	if ((void *)(p + 1) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	p[0] = 0xad;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
