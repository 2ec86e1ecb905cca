// Package events is the wire vocabulary of the client protocol (section 2 of
// the contract): the client envelope, its decoding, and the server messages,
// encoded by appending to a caller's buffer.
//
// It imports nothing of the daemon.
package events
