// Package benchmarks holds uringdio's Go benchmarks and the smoke test of
// the diobench command (benchmarks/diobench), which compares uringdio with
// fio's io_uring engine, os.File pread/pwrite and iceber/iouring-go.
//
//	go test -run '^$' -bench . -count 6 ./benchmarks/ > new.txt   # benchstat old.txt new.txt
//
// The benchmarks use a 256 MiB scratch file in the temp directory, or
// DIOBENCH_FILE (an existing file or block device, read only). Each
// b.N is b.N I/Os with qd in flight, so ns/op is 1/IOPS; they also report
// p50 and p99 latency and CPU per op, and allocations per I/O.
package benchmarks
