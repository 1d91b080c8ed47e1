//go:build !race

package protocol

// raceEnabled reports whether the race detector is on: under -race,
// sync.Pool drops items at random, so allocation counts are not exact.
const raceEnabled = false
