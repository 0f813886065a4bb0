// A Lambda-style handler for runtime `provided`: the binary, named bootstrap, is the runtime.
// aws-lambda-go's lambda.Start talks to the Runtime API at $AWS_LAMBDA_RUNTIME_API.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

type response struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

// handler answers an HTTP event (payload format 2.0) with what it asked for, and returns any
// other event, such as a schedule's body, as it came.
func handler(_ context.Context, raw json.RawMessage) (any, error) {
	var event events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &event); err != nil || event.RequestContext.HTTP.Method == "" {
		return raw, nil
	}
	body, err := json.Marshal(map[string]any{
		"message": "hello from go",
		"method":  event.RequestContext.HTTP.Method,
		"path":    event.RawPath,
		"query":   event.QueryStringParameters,
	})
	if err != nil {
		return nil, err
	}
	return response{
		StatusCode: 200,
		Headers:    map[string]string{"content-type": "application/json"},
		Body:       string(body),
	}, nil
}

func main() {
	lambda.Start(handler)
}
