import { deliverySuite } from "./consumer-delivery.suite.js";

deliverySuite({ title: "one transaction per event", prefix: "cdel", wrap: (handler) => handler, grouped: false });
