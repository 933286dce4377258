// SPDX-License-Identifier: GPL-2.0
/* Loads on its own (a 504-byte frame, under the kernel's 512), but not in a
 * chain: the rootlet's frame below it pushes the combined stack over 512.
 * A helper fills the whole buffer, so the compiler must keep all of it; no
 * maps, so nothing but the stack analysis can tell which program it was. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_bigstack(struct xdp_md *ctx)
{
	__u8 buf[504];

	if (bpf_xdp_load_bytes(ctx, 0, buf, sizeof(buf)) < 0)
		return XDP_PASS;
	return buf[0] == 7 && buf[sizeof(buf) - 1] == 7 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
