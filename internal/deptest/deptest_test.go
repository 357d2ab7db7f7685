// Package deptest enforces the layering of docs/design.md §6: services never import each other, and
// platform code under internal/ (except the wiring in app) never imports a service.
package deptest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/scimflow/scimflow"

type pkg struct {
	ImportPath  string
	Imports     []string
	TestImports []string
}

func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		mine := serviceOf(p.ImportPath)
		for _, imp := range append(p.Imports, p.TestImports...) {
			other := serviceOf(imp)
			if other == "" {
				continue
			}
			switch {
			case mine != "" && other != mine:
				t.Errorf("%s imports %s: services never import each other; share events/ or internal/ instead", p.ImportPath, imp)
			case mine == "" && strings.HasPrefix(p.ImportPath, module+"/internal/") && !strings.HasPrefix(p.ImportPath, module+"/app"):
				t.Errorf("%s imports %s: platform code must not depend on a service", p.ImportPath, imp)
			case strings.HasPrefix(p.ImportPath, module+"/events"):
				t.Errorf("%s imports %s: the wire contract depends on nothing domain-specific", p.ImportPath, imp)
			}
		}
		// Production code never links a test kit: the shipped binary holds no token forger and no
		// test scaffolding (the demo and the benchmarks use the honest internal/devidp).
		if !isTestOnly(p.ImportPath) {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, module+"/testkit/") {
					t.Errorf("%s imports %s: production packages never import test kits", p.ImportPath, imp)
				}
			}
		}
		// Pure domain packages (person/, access/) are shared by every service; they import nothing of the
		// module but each other, so no service or platform detail leaks into them.
		if isPure(p.ImportPath) {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, module+"/") && !isPure(imp) {
					t.Errorf("%s imports %s: pure domain packages import only other pure packages", p.ImportPath, imp)
				}
			}
		}
	}
	if seen < 5 {
		t.Fatalf("go list found %d packages; the test is not looking at the module", seen)
	}
}

// isTestOnly reports whether path is test code as a whole: the test kits and the suites that run
// scimflow from outside. (Test files of every package are already excluded: only Imports is checked.)
func isTestOnly(path string) bool {
	for _, dir := range []string{"testkit", "e2e", "reliability", "test"} {
		if path == module+"/"+dir || strings.HasPrefix(path, module+"/"+dir+"/") {
			return true
		}
	}
	return false
}

// pure lists the top-level packages that hold shared domain logic and nothing else.
var pure = []string{"person", "access"}

func isPure(path string) bool {
	for _, p := range pure {
		if path == module+"/"+p || strings.HasPrefix(path, module+"/"+p+"/") {
			return true
		}
	}
	return false
}

// serviceOf returns the service folder of an import path under services/, or "".
func serviceOf(path string) string {
	rest, ok := strings.CutPrefix(path, module+"/services/")
	if !ok {
		return ""
	}
	return strings.SplitN(rest, "/", 2)[0]
}
