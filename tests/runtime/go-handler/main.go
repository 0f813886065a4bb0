// A handler for tests/runtime_api.rs, run by aws-lambda-go's own runtime client: it echoes
// the event back, fails, or sleeps, as the request's path asks.
package main

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

// Refusal is the error the handler returns; aws-lambda-go reports its type name as errorType.
type Refusal struct{ Reason string }

func (r Refusal) Error() string { return r.Reason }

func handle(event json.RawMessage) (any, error) {
	var request struct {
		RawPath string `json:"rawPath"`
	}
	_ = json.Unmarshal(event, &request)
	switch request.RawPath {
	case "/fail":
		return nil, Refusal{Reason: "the go handler refused"}
	case "/plain-error":
		return nil, errors.New("a plain error")
	case "/sleep":
		time.Sleep(10 * time.Second)
	case "/shaped":
		return map[string]any{
			"statusCode": 201,
			"headers":    map[string]string{"x-handler": "go"},
			"cookies":    []string{"a=1", "b=2"},
			"body":       "made by go",
		}, nil
	}
	return map[string]any{"event": event}, nil
}

func main() {
	lambda.Start(handle)
}
