// A Lambda-style handler for runtime nodejs20.x: `index.handler`.
//
// An HTTP event (payload format 2.0) gets a JSON answer naming its method, path and query; any
// other event, such as a schedule's body, is returned as it came.
export const handler = async (event, context) => {
  const http = event?.requestContext?.http;
  if (!http) {
    return event;
  }
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      message: "hello from node",
      method: http.method,
      path: event.rawPath,
      query: event.queryStringParameters ?? {},
      requestId: context.awsRequestId,
    }),
  };
};
