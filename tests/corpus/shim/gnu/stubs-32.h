/* empty: clang -target bpf selects the 32-bit glibc stubs; BPF needs none */
