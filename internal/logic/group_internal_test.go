package logic

import (
	"fmt"
	"slices"
	"testing"
)

func TestGroupKeys(t *testing.T) {
	for _, comets := range []int{1, 3, linearGroups, linearGroups + 5, 50} {
		t.Run(fmt.Sprint(comets), func(t *testing.T) {
			var keys, servers []string
			want := map[string][]string{}
			for i := range 200 {
				k := fmt.Sprintf("k%03d", i)
				srv := ""
				if i%7 != 0 {
					srv = fmt.Sprintf("comet-%d", i%comets)
					want[srv] = append(want[srv], k)
				}
				keys = append(keys, k)
				servers = append(servers, srv)
			}
			// A duplicate key is pushed once.
			keys = append(keys, "k001")
			servers = append(servers, servers[1])
			s := new(pushScratch)
			for range 2 { // the second round reuses the buffers
				offline := s.group(keys, servers)
				if offline != 29 {
					t.Fatalf("offline = %d", offline)
				}
				if len(s.groups) != len(want) {
					t.Fatalf("%d groups, want %d", len(s.groups), len(want))
				}
				for _, g := range s.groups {
					got := s.flat[g.off : g.off+g.n]
					if !slices.Equal(got, want[g.server]) {
						t.Fatalf("group %s = %v, want %v", g.server, got, want[g.server])
					}
				}
			}
		})
	}
}

func BenchmarkGroupKeys(b *testing.B) {
	const n, comets = 500, 20
	keys := make([]string, n)
	servers := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("device-key-%d", i)
		servers[i] = fmt.Sprintf("comet-%d", i%comets)
	}
	s := new(pushScratch)
	b.ReportAllocs()
	for b.Loop() {
		s.group(keys, servers)
	}
}
