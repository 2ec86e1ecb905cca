// Package auth decides whether a WebSocket handshake gets in, and as whom.
//
// It holds the JWT Verifier (golang-jwt/jwt/v5, with keys from the configured
// HMAC secret, a PEM or JWKS file, or a JWKS URL refreshed in the background
// through MicahParks/keyfunc), ExtractToken (Authorization: Bearer, query
// parameter, cookie), the Gate that runs the admission checks of a handshake
// in order of cost (draining and global cap, path, per-IP connections and
// handshake rate, Origin, token), and small admission helpers for the
// message path (Bucket, Slots).
//
// The Gate never writes to the client: it returns a Refusal that the gateway
// hands to netpoll, which writes the plain HTTP response.
//
// Refusals are rows of the one refusal table, netpoll/refusal (a leaf
// package netpoll also writes from); auth only decides which row applies.
//
// auth imports daemon/config and netpoll/refusal and nothing else of ours;
// in particular it must not import netpoll, gateway, sessions or dispatch.
package auth
