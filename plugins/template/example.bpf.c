// SPDX-License-Identifier: GPL-2.0-only
/* example: an xdphooks plugin (packaging/new_plugin.py NAME copies
 * plugins/template/ under a new name).
 *
 * It is an ordinary XDP object: build it with clang -target bpf, load it
 * with anything. xdphooks chains it with the other installed plugins.
 * This one counts the bytes it sees and passes every packet: replace it
 * with your program.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION "0"
#endif
/* Build stamp (the package version); unused by the program itself. */
const char plugin_version[] __attribute__((used)) = PLUGIN_VERSION;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bytes_seen SEC(".maps");

SEC("xdp")
int example(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *bytes = bpf_map_lookup_elem(&bytes_seen, &key);

	if (bytes)
		*bytes += ctx->data_end - ctx->data;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
