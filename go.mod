module github.com/uringdio/uringdio

go 1.26.0

require (
	github.com/iceber/iouring-go v0.0.0-20230403020409-002cfd2e2a90
	golang.org/x/sys v0.49.0
)

require github.com/google/btree v1.1.3 // indirect
