package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A Lambda-style handler for runtime java17: {@code example.Hello::handleRequest}.
 *
 * <p>An HTTP event (payload format 2.0) gets a JSON answer naming its method, path and query; any
 * other event, such as a schedule's body, is returned as it came.
 */
public class Hello implements RequestHandler<Map<String, Object>, Map<String, Object>> {
  @Override
  public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
    Object requestContext = event == null ? null : event.get("requestContext");
    Object http = requestContext instanceof Map ? ((Map<?, ?>) requestContext).get("http") : null;
    if (!(http instanceof Map)) {
      return event;
    }
    Object query = event.get("queryStringParameters");
    String body =
        "{\"message\":\"hello from java\""
            + ",\"method\":" + quote(((Map<?, ?>) http).get("method"))
            + ",\"path\":" + quote(event.get("rawPath"))
            + ",\"query\":" + object(query instanceof Map ? (Map<?, ?>) query : Map.of())
            + ",\"requestId\":" + quote(context.getAwsRequestId())
            + "}";
    Map<String, Object> response = new LinkedHashMap<>();
    response.put("statusCode", 200);
    response.put("headers", Map.of("content-type", "application/json"));
    response.put("body", body);
    return response;
  }

  private static String object(Map<?, ?> map) {
    StringBuilder out = new StringBuilder("{");
    for (Map.Entry<?, ?> entry : map.entrySet()) {
      if (out.length() > 1) {
        out.append(',');
      }
      out.append(quote(entry.getKey())).append(':').append(quote(entry.getValue()));
    }
    return out.append('}').toString();
  }

  private static String quote(Object value) {
    if (value == null) {
      return "null";
    }
    StringBuilder out = new StringBuilder("\"");
    for (char c : value.toString().toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
