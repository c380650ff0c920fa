/**
 * Topic-exchange matching, the one implementation (bridge, replay, live tail, authorization):
 * `*` is exactly one word, `#` zero or more. RabbitMQ semantics, in linear time: the pattern is
 * run as an NFA over its segment positions, so one match costs at most
 * (pattern segments + 1) × (key words + 1) steps, whatever the pattern (a backtracking matcher is
 * exponential in the number of `#`).
 */

/** What the API accepts as an action name or a pattern (also stated in the README and OpenAPI). */
export const TOPIC_LIMITS = {
  /** Longest action name or pattern, characters. */
  maxLength: 255,
  /** Most dot-separated segments in a pattern. */
  maxSegments: 32,
  /**
   * Most `#` segments in a subscription's pattern. That pattern also becomes a RabbitMQ binding,
   * and RabbitMQ's own topic matcher backtracks over `#`: each published event costs the broker
   * about (words of its action)^(number of #) steps per such binding. Measured on RabbitMQ 3.10:
   * two `#` over a 128-word action 20-30 ms, three over 64 words 115 ms, five over 20 words
   * 150-190 ms, and ten over 20 words kept a channel busy for minutes (publishes unconfirmed).
   * With one `#` the broker's work per event is linear in the words of the action, so that is
   * the limit. Amebo's own matcher (below) is linear whatever the pattern: the live tail and the
   * event explorer, which bind nothing, take any well-formed pattern.
   */
  maxBindingHashes: 1,
} as const;

/** A subscription's pattern as the API states it (OpenAPI and refusals). */
export const BINDING_PATTERN_RULES =
  `an action name or a topic pattern (segments of [A-Za-z0-9_-], * for one segment, # for zero or more; ` +
  `at most ${TOPIC_LIMITS.maxSegments} segments, ${TOPIC_LIMITS.maxLength} characters and ` +
  `${TOPIC_LIMITS.maxBindingHashes === 1 ? 'one # segment' : `${TOPIC_LIMITS.maxBindingHashes} # segments`})`;

const SEGMENT = /^(?:[A-Za-z0-9_-]+|\*|#)$/;

/** True for a well-formed pattern within the limits (`orders.*`, `#.created`, `a.b`). */
export function isTopicPattern(p: string): boolean {
  if (typeof p !== 'string' || p.length === 0 || p.length > TOPIC_LIMITS.maxLength) return false;
  const segs = p.split('.');
  return segs.length <= TOPIC_LIMITS.maxSegments && segs.every((s) => SEGMENT.test(s));
}

/**
 * True for a pattern that may become a RabbitMQ binding (a subscription's): well-formed, and at
 * most `TOPIC_LIMITS.maxBindingHashes` `#` segments.
 */
export function isBindablePattern(p: string): boolean {
  return isTopicPattern(p) && !backtracks(p);
}

/** True when the pattern has more `#` segments than a binding may (`TOPIC_LIMITS.maxBindingHashes`). */
export function backtracks(p: string): boolean {
  return p.split('.').filter((s) => s === '#').length > TOPIC_LIMITS.maxBindingHashes;
}

/** True when the pattern has a wildcard (else it names one action). */
export const isWildcard = (p: string): boolean => p.includes('*') || p.includes('#');

export type TopicMatcher = (routingKey: string) => boolean;

/** Compiles a pattern into a matcher; compile once where a pattern meets many keys. */
export function topicMatcher(pattern: string): TopicMatcher {
  // `#.#` matches what `#` matches: collapse runs, which also keeps the state set small.
  const p: string[] = [];
  for (const s of pattern.split('.')) if (!(s === '#' && p[p.length - 1] === '#')) p.push(s);
  const m = p.length;
  if (!isWildcard(pattern)) return (key) => key === pattern;
  return (key) => {
    const words = key.split('.');
    let cur = new Uint8Array(m + 1);
    let next = new Uint8Array(m + 1);
    cur[0] = 1;
    close(cur);
    for (const w of words) {
      next.fill(0);
      let any = false;
      for (let i = 0; i < m; i++) {
        if (!cur[i]) continue;
        const s = p[i]!;
        if (s === '#')
          next[i] = 1; // `#` takes this word and may take more
        else if (s === '*' || s === w) next[i + 1] = 1;
        else continue;
        any = true;
      }
      if (!any) return false;
      close(next);
      [cur, next] = [next, cur];
    }
    return cur[m] === 1;
  };

  /** `#` may also take no word: every state before a `#` reaches the state after it. */
  function close(states: Uint8Array): void {
    for (let i = 0; i < m; i++) if (states[i] && p[i] === '#') states[i + 1] = 1;
  }
}

/** One-off match; prefer `topicMatcher` in loops. */
export const topicMatches = (pattern: string, key: string): boolean => topicMatcher(pattern)(key);
