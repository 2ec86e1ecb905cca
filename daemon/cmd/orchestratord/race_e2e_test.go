//go:build race

package main

// raceBuild: the tests run with -race, so the daemon is built with -race
// too, and a data race in it fails the scenario (exit code 66).
const raceBuild = true
