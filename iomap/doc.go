// Package iomap maps byte ranges of a file to extents, the user-space
// counterpart of the kernel's iomap_begin/iomap_end and iomap_iter().
//
// A [Mapper] answers "what backs the file at this offset?" with a [Mapping]:
// a type (hole, mapped, unwritten, inline, delalloc), flags (new, shared,
// dirty, stale), a target (an index into the I/O engine's table of files and
// devices) and the byte address on that target. The [Iter] loop walks a
// request range one mapping at a time with the kernel's stopping rules, and
// [Each] wraps it for callers that prefer a callback.
//
// Three mappers ship:
//
//   - [WholeFile]: one mapped extent over [0, size), a hole beyond. For files
//     and block devices where the kernel does all the mapping work.
//   - [FileMapper]: a real file's layout learned from FIEMAP (or
//     SEEK_DATA/SEEK_HOLE where FIEMAP is missing, as on tmpfs) and cached in
//     a B-tree, so that reads of holes and unwritten extents are served
//     without I/O.
//   - [ExtentMap]: an in-memory extent map for engines that manage their own
//     space on raw devices or preallocated files: allocation on write,
//     preallocation, unwritten conversion at I/O completion, punching, and
//     copy-on-write clones.
//
// The package imports nothing else from uringdio.
package iomap
