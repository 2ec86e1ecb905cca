package sessions

import (
	"bytes"
	"fmt"

	"encoding/json"
)

// MergePatch applies patch to doc as an RFC 7386 JSON merge patch and
// returns the result. doc may be empty (treated as {}). Numbers keep their
// exact text. The result must be a JSON object (a session context is one):
// otherwise, and for a patch that is not JSON, the error wraps
// ErrInvalidPatch.
func MergePatch(doc, patch []byte) ([]byte, error) {
	p, err := decodeJSON(patch)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPatch, err)
	}
	var target any = map[string]any{}
	if len(bytes.TrimSpace(doc)) > 0 {
		if target, err = decodeJSON(doc); err != nil {
			return nil, fmt.Errorf("decode context: %w", err)
		}
	}
	out := mergeValue(target, p)
	if _, ok := out.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: the context must stay a JSON object", ErrInvalidPatch)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode context: %w", err)
	}
	return b, nil
}

// mergeValue is the MergePatch function of RFC 7386 section 2.
func mergeValue(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergeValue(tm[k], v)
	}
	return tm
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}
