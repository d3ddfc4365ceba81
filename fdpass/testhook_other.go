//go:build !linux

package fdpass

// EnvTestStop is the test hook of testhook.go; it does nothing here.
const EnvTestStop = "BATON_TEST_HANDOFF_STOP"

func testStop(string) {}
