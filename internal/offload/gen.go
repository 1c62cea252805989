package offload

// The compiled program is committed (datapath_bpfel.o, with the Go that embeds it), so
// that building relay needs no clang. After editing bpf/datapath.c, run `go generate
// ./internal/offload` with clang and libbpf's headers installed (apt-get install clang
// llvm libbpf-dev): it compiles the program and records what it was built from in
// datapath.sum, which TestObjectMatchesSource checks.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" datapath bpf/datapath.c
//go:generate go run ./internal/gensum
