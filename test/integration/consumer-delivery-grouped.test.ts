import { grouped } from "../helpers/consumer-env.js";
import { deliverySuite } from "./consumer-delivery.suite.js";

deliverySuite({ title: "grouped (handleBatch)", prefix: "cdgr", wrap: grouped, grouped: true });
