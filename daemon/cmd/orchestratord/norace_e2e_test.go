//go:build !race

package main

// raceBuild: the tests run without -race; so is the daemon.
const raceBuild = false
