package events

// Turn is one chat turn of a session's history.
type Turn struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}
