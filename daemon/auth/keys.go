package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/MicahParks/jwkset"
)

// minRSABits is the smallest RSA modulus accepted for RS* and PS* tokens.
const minRSABits = 2048

// staticKey is a public key from keys_file. kid and alg are empty when the
// file (PEM) does not say.
type staticKey struct {
	kid, alg string
	key      crypto.PublicKey
}

// keyFits reports whether key may verify a token signed with alg: the key
// type must belong to the algorithm's family, and for ECDSA the curve must be
// the algorithm's. Symmetric keys never fit here: HMAC uses only the
// configured secret (see Verifier.keyFunc), which is what rules out
// algorithm-confusion attacks (an RS256 public key used as an HMAC secret).
func keyFits(alg string, key any) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N != nil && k.N.BitLen() >= minRSABits
	case "ES256":
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P256()
	case "ES384":
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P384()
	case "ES512":
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P521()
	case "EdDSA":
		k, ok := key.(ed25519.PublicKey)
		return ok && len(k) == ed25519.PublicKeySize
	}
	return false
}

// publicOf returns the public half of key when key is a private key.
func publicOf(key any) any {
	if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		if _, isPub := key.(ed25519.PublicKey); !isPub {
			return pk.Public()
		}
	}
	return key
}

// loadKeysFile reads a file of PEM public keys (PUBLIC KEY, RSA PUBLIC KEY
// or CERTIFICATE blocks) or a JWKS document (a JSON object with "keys").
// Symmetric JWKs are skipped: HMAC uses only the configured secret.
func loadKeysFile(path string, log *slog.Logger) ([]staticKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keys file: %w", err)
	}
	var keys []staticKey
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		keys, err = parseJWKS(t, log)
	} else {
		keys, err = parsePEM(b)
	}
	if err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys file %s: no public key found", path)
	}
	return keys, nil
}

// parseJWKS parses a JWKS document.
func parseJWKS(b []byte, log *slog.Logger) ([]staticKey, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	jwks, err := set.JWKSlice()
	if err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	var keys []staticKey
	for _, j := range jwks {
		m := j.Marshal()
		key := publicOf(j.Key())
		if _, sym := key.([]byte); sym {
			log.Warn("symmetric key in JWKS keys file ignored: HMAC uses only the configured secret", "kid", m.KID)
			continue
		}
		keys = append(keys, staticKey{kid: m.KID, alg: m.ALG.String(), key: key})
	}
	return keys, nil
}

// parsePEM parses PEM public keys and certificates.
func parsePEM(b []byte) ([]staticKey, error) {
	var keys []staticKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var key any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("PEM block %q: only public keys and certificates belong here", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %q: %w", block.Type, err)
		}
		keys = append(keys, staticKey{key: key})
	}
	if len(bytes.TrimSpace(b)) > 0 && len(keys) == 0 {
		return nil, errors.New("neither PEM nor JWKS")
	}
	return keys, nil
}
