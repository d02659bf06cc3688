// OpenAI-style errors: every failure a client can see is an ApiError with an HTTP status and the
// body {"error":{"message","type","param","code"}} that the openai clients parse.

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_exceeded'
  | 'server_error'
  | 'service_unavailable';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType | string = defaultType(status),
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** seconds, sent as Retry-After (429, 503) */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function defaultType(status: number): ErrorType {
  if (status === 401) return 'authentication_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_exceeded';
  if (status === 503) return 'service_unavailable';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** 400 naming the offending field, e.g. badField('temperature', 'must be a number ≥ 0'). */
export function badField(param: string, problem: string): ApiError {
  return new ApiError(400, `${param} ${problem}`, 'invalid_request_error', param);
}
