//go:build !race

package signaling

// raceDetector: the race detector's shadow memory makes RSS no measure of the heap.
const raceDetector = false
