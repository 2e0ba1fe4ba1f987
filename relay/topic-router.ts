/**
 * Routing of events to Kafka topics (docs/CONTRACT.md R7): an ordered list of rules, each matching an
 * aggregate type, an event kind, or both; the first match wins and everything else goes to the
 * default topic, so no event is ever without a topic (weakness 8 of the origin).
 */

/** An event's kind as routing sees it. */
export type EventKindLabel = "domain" | "command";

/** One routing rule: every condition that is set must match. */
export interface Route {
  readonly aggregateType?: string;
  readonly kind?: EventKindLabel;
  readonly topic: string;
}

// Kafka's legal topic characters and length.
const TOPIC = /^[A-Za-z0-9._-]{1,249}$/;
const AGGREGATE_TYPE = /^[A-Za-z][A-Za-z0-9_.-]*$/;

/** Returns the reason a topic name is invalid for Kafka, or undefined. */
export function checkTopicName(topic: string): string | undefined {
  if (!TOPIC.test(topic)) return `topic ${JSON.stringify(topic)} must match [A-Za-z0-9._-]{1,249}`;
  if (topic === "." || topic === "..") return `topic ${JSON.stringify(topic)} is not allowed`;
  return undefined;
}

/**
 * Parses `Order=orders,kind:command=commands,Invoice+kind:domain=invoices`: comma-separated
 * `match=topic` rules where match is an aggregate type, `kind:domain|command`, or
 * `Type+kind:K`. Throws an Error naming the bad rule.
 */
export function parseRoutes(raw: string): Route[] {
  const routes: Route[] = [];
  for (const part of raw.split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
    const eq = part.lastIndexOf("=");
    if (eq <= 0 || eq === part.length - 1) throw new Error(`route ${JSON.stringify(part)} must look like match=topic`);
    const topic = part.slice(eq + 1).trim();
    const topicProblem = checkTopicName(topic);
    if (topicProblem !== undefined) throw new Error(`route ${JSON.stringify(part)}: ${topicProblem}`);
    let aggregateType: string | undefined;
    let kind: EventKindLabel | undefined;
    for (const condition of part.slice(0, eq).trim().split("+").map((s) => s.trim())) {
      if (condition.startsWith("kind:")) {
        const value = condition.slice("kind:".length);
        if (value !== "domain" && value !== "command") throw new Error(`route ${JSON.stringify(part)}: kind must be domain or command`);
        if (kind !== undefined) throw new Error(`route ${JSON.stringify(part)} names kind twice`);
        kind = value;
      } else {
        if (!AGGREGATE_TYPE.test(condition)) throw new Error(`route ${JSON.stringify(part)}: ${JSON.stringify(condition)} is not an aggregate type or kind:K`);
        if (aggregateType !== undefined) throw new Error(`route ${JSON.stringify(part)} names two aggregate types`);
        aggregateType = condition;
      }
    }
    routes.push({ topic, ...(aggregateType === undefined ? {} : { aggregateType }), ...(kind === undefined ? {} : { kind }) });
  }
  return routes;
}

/** Chooses the topic of each event: the first matching rule, else the default topic. */
export class TopicRouter {
  constructor(
    readonly routes: readonly Route[],
    readonly defaultTopic: string,
  ) {}

  /** The topic for an event of `aggregateType` and `kind`. */
  topicFor(aggregateType: string, kind: EventKindLabel): string {
    for (const route of this.routes) {
      if (route.aggregateType !== undefined && route.aggregateType !== aggregateType) continue;
      if (route.kind !== undefined && route.kind !== kind) continue;
      return route.topic;
    }
    return this.defaultTopic;
  }

  /** Every topic an event can be routed to, without duplicates. */
  topics(): string[] {
    return [...new Set([this.defaultTopic, ...this.routes.map((r) => r.topic)])];
  }
}
