// Package fileorder checks that the files of a package call one way: each
// file uses only identifiers (types, functions, methods, fields, variables,
// constants) defined in itself or in files below it in a written order,
// the way the packages of a layered program import one way. A lower file
// reaches an upper one only through a function value or an interface
// handed down to it, which this check lets through because the lower file
// never names the upper identifier.
//
// It is a test helper: a package's test lists its files from top to bottom
// and calls Check.
package fileorder

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"sort"
	"strings"
)

// A Violation is one use of an identifier defined in a file above the
// user's.
type Violation struct {
	User, Definer string // file names
	Name          string // the identifier, with its receiver or struct for methods and fields
	Pos           string // where it is used
}

func (v Violation) String() string {
	return fmt.Sprintf("%s uses %s, defined above it in %s", v.Pos, v.Name, v.Definer)
}

// Check type-checks the package in dir (its non-test files for the
// current GOOS) and returns every use of an identifier defined in a file
// ranked above the user's. order lists the package's files from top (the
// API) to bottom; files the package has and order does not name are an
// error, as are names order has and the package does not.
func Check(dir string, order []string) ([]Violation, error) {
	bp, err := build.Default.ImportDir(dir, 0)
	if err != nil {
		return nil, err
	}
	rank := make(map[string]int, len(order))
	for i, f := range order {
		rank[f] = i
	}
	var missing []string
	for _, f := range bp.GoFiles {
		if _, ok := rank[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("fileorder: files not in the order: %s", strings.Join(missing, ", "))
	}
	if len(order) != len(bp.GoFiles) {
		return nil, fmt.Errorf("fileorder: the order names %d files, the package has %d: %v", len(order), len(bp.GoFiles), bp.GoFiles)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range bp.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	info := &types.Info{Defs: map[*ast.Ident]types.Object{}, Uses: map[*ast.Ident]types.Object{}}
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil)}
	pkg, err := conf.Check(bp.ImportPath, fset, files, info)
	if err != nil {
		return nil, err
	}
	fileOf := func(p token.Pos) string { return filepath.Base(fset.Position(p).Filename) }
	var out []Violation
	for id, obj := range info.Uses {
		if obj == nil || obj.Pkg() != pkg || !obj.Pos().IsValid() || !defined(obj, pkg) {
			continue
		}
		user, definer := fileOf(id.Pos()), fileOf(obj.Pos())
		if rank[definer] < rank[user] {
			out = append(out, Violation{User: user, Definer: definer, Name: name(obj), Pos: fset.Position(id.Pos()).String()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
	return out, nil
}

// defined reports whether obj is one of the package's own named things: a
// package-level object, a method, or a struct field (not a local).
func defined(obj types.Object, pkg *types.Package) bool {
	switch o := obj.(type) {
	case *types.Func:
		return o.Type().(*types.Signature).Recv() != nil || o.Parent() == pkg.Scope()
	case *types.Var:
		return o.IsField() || o.Parent() == pkg.Scope()
	case *types.PkgName, *types.Label:
		return false
	}
	return obj.Parent() == pkg.Scope()
}

func name(obj types.Object) string {
	if f, ok := obj.(*types.Func); ok {
		if r := f.Type().(*types.Signature).Recv(); r != nil {
			return types.TypeString(r.Type(), func(*types.Package) string { return "" }) + "." + f.Name()
		}
	}
	if v, ok := obj.(*types.Var); ok && v.IsField() {
		return "field " + v.Name()
	}
	return obj.Name()
}
