/* Empty on purpose: under clang -target bpf (no __x86_64__) glibc's <gnu/stubs.h> asks for
 * the 32-bit stubs, which Debian ships only with libc6-dev-i386; BPF code needs none. */
