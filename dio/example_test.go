//go:build linux

package dio_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// Open a file for direct I/O, write a page and read it back.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, err := dio.Open(filepath.Join(dir, "pages"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()

	page, _ := ring.Alloc(8192) // page aligned, off-heap
	defer ring.Free(page)
	copy(page, "hello, direct I/O")
	if _, err := f.WriteAtContext(context.Background(), page, 8192, dio.DSync); err != nil {
		fmt.Println(err)
		return
	}
	clear(page)
	n, err := f.ReadAt(page, 8192)
	size, _ := f.Size() // the kernel's size, whoever wrote the file
	fmt.Println(n, err, string(page[:17]), size)
	// Output: 8192 <nil> hello, direct I/O 16384
}

// Submit reads that complete through a callback on the reaper.
func ExampleFile_Submit() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()
	mem, _ := ring.Alloc(4 * 4096)
	defer ring.Free(mem)
	f.WriteAt(mem, 0)

	done := make(chan int, 4)
	for i := 0; i < 4; i++ {
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: mem[i*4096 : (i+1)*4096],
			Policy: completion.Inline,
			Callback: func(r *dio.Request) {
				n, _ := r.Result()
				done <- n
			}}
		if err := f.Submit(r); err != nil {
			fmt.Println(err)
			return
		}
	}
	total := 0
	for i := 0; i < 4; i++ {
		total += <-done
	}
	fmt.Println(total)
	// Output: 16384
}

// With Options.StrictAlignment, misaligned input fails before anything is
// submitted, saying what is wrong (without it, it goes through bounce
// buffers).
func ExampleOptions_strictAlignment() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{StrictAlignment: true})
	defer f.Close()
	buf, _ := ring.Alloc(8192)
	defer ring.Free(buf)
	_, err := f.ReadAt(buf[:4096], 1)
	fmt.Println(errors.Is(err, dio.ErrUnaligned), errors.Is(err, syscall.EINVAL), strings.Contains(err.Error(), "offset 0x1"))
	// Output: true true true
}
