import { Command } from "commander";
import { action } from "../action.ts";
import { workspaceNetwork, type WorkspaceNetwork } from "../../api/network.ts";
import { sanitizeTerminalText } from "../../util/terminal.ts";

export function networkCommand(): Command {
  return new Command("network")
    .description("a workspace's network: mode, datapath, MAC, address, gateway, DNS, routes, MTU, published ports and (while it runs) the stack's counters")
    .argument("<name>", "workspace name")
    .action(
      action(async (ctx, name: string) => {
        const n = await workspaceNetwork(name, { stateDir: ctx.globals.stateDir });
        return { json: n, text: networkText(n) };
      }),
    );
}

interface Forward {
  hostIp: string;
  hostPort: number;
  guestPort: number;
  proto: string;
  listening?: boolean;
  connections?: number;
}

/** Published ports as `127.0.0.1:8080 -> 80/tcp`. */
export function forwardsText(forwards: readonly Forward[]): string {
  return forwards.length ? forwards.map((f) => `${f.hostIp}:${f.hostPort} -> ${f.guestPort}/${f.proto}${f.listening === false ? " (not listening)" : ""}`).join(", ") : "none";
}

function sum(r: Record<string, number> | undefined): number {
  return Object.values(r ?? {}).reduce((a, b) => a + b, 0);
}

function reasons(r: Record<string, number> | undefined): string {
  const e = Object.entries(r ?? {});
  return e.length ? ` (${e.map(([k, v]) => `${k} ${v}`).join(", ")})` : "";
}

function egressText(e: { mode: string; passthrough?: string[]; pins?: number; caFingerprint256?: string; flows?: { active: number; accepted: number; denied: number; mitm: number; passthrough: number } } | undefined): string {
  if (!e || e.mode === "off") return "off (no mediation, no CA, no audit)";
  const parts = [e.mode];
  if (e.passthrough?.length) parts.push(`passthrough ${e.passthrough.join(",")}`);
  if (e.flows) parts.push(`${e.flows.accepted} flows (${e.flows.active} open, ${e.flows.mitm} intercepted, ${e.flows.passthrough} passthrough), ${e.flows.denied} denied, ${e.pins ?? 0} DNS pins`);
  if (e.caFingerprint256) parts.push(`CA ${e.caFingerprint256.slice(0, 23)}...`);
  return `${parts.join("; ")} (audit: microagent egress NAME)`;
}

export function networkText(n: WorkspaceNetwork): string {
  if (n.mode === "isolated") return `${n.workspace}: network isolated (no NIC; only lo in the guest)`;
  const x = n as WorkspaceNetwork & {
    link: string;
    mac: string;
    address: string;
    prefix: number;
    gateway: string;
    dns: string[];
    dnsUpstreams?: string[];
    routes: { destination: string; via: string }[];
    mtu: number;
    addHosts: { name: string; ip: string }[];
    egressAllow: string[];
    egress?: { mode: string; passthrough?: string[]; pins?: number; caFingerprint256?: string; flows?: { active: number; accepted: number; denied: number; mitm: number; passthrough: number } };
    forwards: Forward[];
    counters?: {
      framesIn: number;
      framesOut: number;
      bytesIn: number;
      bytesOut: number;
      drops: Record<string, number>;
      tcp: { open: number; halfOpen: number; accepted: number; refused: Record<string, number> };
      udp: { open: number; accepted: number; refused: Record<string, number> };
      dns: { forwarded: number; failed: number };
    };
  };
  const lines = [
    `${x.workspace}: network user, datapath ${x.datapath}${x.live ? `, link ${x.link}` : " (not running: recorded settings)"}`,
    `  mac:        ${x.mac}`,
    `  address:    ${x.address}/${x.prefix}`,
    `  gateway:    ${x.gateway} (also DNS and host.microagent.internal)`,
    `  dns:        ${x.dns.join(", ")}${x.dnsUpstreams?.length ? ` -> upstream ${x.dnsUpstreams.join(", ")}` : ""}`,
    `  routes:     ${x.routes.map((r) => `${r.destination} via ${r.via}`).join("; ")}`,
    `  mtu:        ${x.mtu}`,
    `  add-hosts:  ${x.addHosts.length ? x.addHosts.map((h) => `${h.name} -> ${h.ip}`).join(", ") : "none"}`,
    `  allowed:    ${x.egressAllow.length ? x.egressAllow.join(", ") : x.egress?.mode === "strict" ? "nothing listed (strict)" : "public destinations only"}`,
    `  egress:     ${egressText(x.egress)}`,
    `  published:  ${forwardsText(x.forwards)}`,
  ];
  const c = x.counters;
  if (c) {
    lines.push(
      `  frames:     ${c.framesIn} in (${c.bytesIn} bytes), ${c.framesOut} out (${c.bytesOut} bytes); dropped ${sum(c.drops)}${reasons(c.drops)}`,
      `  tcp:        ${c.tcp.open} open (${c.tcp.halfOpen} half-open), ${c.tcp.accepted} accepted, ${sum(c.tcp.refused)} refused${reasons(c.tcp.refused)}`,
      `  udp:        ${c.udp.open} open, ${c.udp.accepted} accepted, ${sum(c.udp.refused)} refused${reasons(c.udp.refused)}`,
      `  dns:        ${c.dns.forwarded} forwarded, ${c.dns.failed} failed upstream`,
    );
  }
  return sanitizeTerminalText(lines.join("\n"));
}
