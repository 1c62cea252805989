//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procCPU is the user+system CPU time a process (all its threads, live and exited) has
// used, from /proc/<pid>/stat. Resolution: one clock tick (10 ms), so measuring windows
// are a few seconds long.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * clockTick, nil
}

// procRSS is a process's resident set size in KiB (VmRSS of /proc/<pid>/status).
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// selfCPU is the CPU time of this process (the load generator), microsecond precision.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// udpDrops sums the kernel's per-socket receive-queue drop counters (the last column of
// /proc/net/udp) for local ports that mine says belong to one side. It tells where a
// loss happened: in the generator's sockets or in the server's.
func udpDrops(mine func(port uint16) bool) uint64 {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0
	}
	var total uint64
	lines := bytes.Split(b, []byte{'\n'})
	for _, line := range lines[1:] {
		f := bytes.Fields(line)
		if len(f) < 13 {
			continue
		}
		local := f[1] // 0100007F:1F90
		c := bytes.IndexByte(local, ':')
		if c < 0 {
			continue
		}
		port, err := strconv.ParseUint(string(local[c+1:]), 16, 16)
		if err != nil || !mine(uint16(port)) {
			continue
		}
		d, err := strconv.ParseUint(string(f[len(f)-1]), 10, 64)
		if err == nil {
			total += d
		}
	}
	return total
}

// machineBusy is the CPU time all CPUs spent on anything but idling since boot: the
// CPUs times the time since boot, minus the idle, iowait and steal of /proc/stat. Not
// the sum of its user, system, irq and softirq columns: those are sampled at the timer
// tick and miss much of a load that runs in short bursts between sleeps (a generator
// pacing datagrams; the kernel relaying inside its system calls), while idle time is
// measured exactly when the tick stops in idle (NO_HZ, every distribution kernel).
// Minus the server's and the generator's own time, it shows how much else ran.
func machineBusy() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	idle := cpuColumns(4, 5, 8) // idle iowait steal
	return time.Duration(runtime.NumCPU())*time.Duration(ts.Nano()) - idle
}

// machineTicks is the sum of /proc/stat's busy columns (user nice system irq softirq),
// tick-sampled: kept for comparison with machineBusy in the JSON.
func machineTicks() time.Duration { return cpuColumns(1, 2, 3, 6, 7) }

// cpuColumns sums columns of /proc/stat's first line, all CPUs together.
func cpuColumns(cols ...int) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks uint64
	for _, i := range cols {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * clockTick
}

// waitQuiet waits, before a phase starts its server, until the rest of the machine uses
// less than quietPct of one core (two half-second samples in a row), for at most quietWait.
// On a shared machine a neighbour's compile or test run would otherwise land inside a
// measuring window; each window also records what else ran (other_cpu_pct).
func (o *options) waitQuiet() {
	if o.quietWait <= 0 {
		return
	}
	deadline := time.Now().Add(o.quietWait)
	said := false
	quiet := 0
	for {
		b0, g0 := machineBusy(), selfCPU()
		time.Sleep(500 * time.Millisecond)
		other := max(0, 100*(machineBusy()-b0-(selfCPU()-g0)).Seconds()/0.5)
		if other <= o.quietPct {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= 2 { // a full second: a neighbour's bursts come and go
			if said {
				o.logf("  machine quiet (%.0f%% of a core elsewhere)", other)
			}
			return
		}
		if time.Now().After(deadline) {
			o.logf("  machine still busy after %v: other processes use %.0f%% of a core; measuring anyway (see other_cpu_pct)", o.quietWait, other)
			o.busyStarts++
			return
		}
		if !said {
			o.logf("  waiting for the machine to quieten: other processes use %.0f%% of a core", other)
			said = true
		}
	}
}
