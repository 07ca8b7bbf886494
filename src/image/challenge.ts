/**
 * `WWW-Authenticate` parsing (RFC 7235 challenges with auth-params), as registries send it:
 * `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"`.
 * Pure: no I/O.
 */

export interface AuthChallenge {
  /** Lowercased scheme: `bearer`, `basic`, ... */
  scheme: string;
  /** Auth params with lowercased names. */
  params: Record<string, string>;
}

/**
 * Parse one header value into its challenges. Tolerates quoted strings with escapes, commas inside
 * quotes, token68 values, and several challenges in one header. Never throws: malformed text ends
 * the parse and returns what was read.
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z/]/.test(header[i] as string)) i++;
    return header.slice(start, i);
  };
  let current: AuthChallenge | undefined;
  while (i < n) {
    skipWs();
    if (header[i] === ",") {
      i++;
      continue;
    }
    const token = readToken();
    if (token === "") break; // garbage: stop
    skipWs();
    if (header[i] === "=") {
      // auth-param of the current challenge (or a token68 ending in '=')
      i++;
      skipWs();
      let value: string;
      if (header[i] === '"') {
        i++;
        let v = "";
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          v += header[i];
          i++;
        }
        i++; // closing quote
        value = v;
      } else {
        const start = i;
        while (i < n && header[i] !== "," && header[i] !== " ") i++;
        value = header.slice(start, i);
      }
      if (current) current.params[token.toLowerCase()] = value;
    } else {
      // a new challenge: scheme [token68 | params]
      current = { scheme: token.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}
