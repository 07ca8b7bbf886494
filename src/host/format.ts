/** Text rendering of doctor and host reports (pure, so tests need no TTY). */
import type { HostCheck } from "./checks.ts";
import type { CapabilityReport, HostResponse } from "./doctor.ts";
import type { BackendCapabilityRow } from "../backend/capabilities.ts";

export interface FormatOptions {
  color: boolean;
}

function paint(color: boolean, code: number, s: string): string {
  return color ? `\u001b[${code}m${s}\u001b[0m` : s;
}

function glyph(c: HostCheck, color: boolean): string {
  if (c.ok) return paint(color, 32, "✓");
  return c.required ? paint(color, 31, "✗") : paint(color, 33, "!");
}

function hostLine(r: HostResponse): string {
  const h = r.host;
  const parts: string[] = [h.architecture];
  if (h.binaryPath) parts.push(`${r.backend === "linux-kvm" ? "firecracker" : "qemu"}=${h.binaryPath}${h.binaryVersion ? ` (${h.binaryVersion})` : ""}`);
  if (h.accel) parts.push(`accel=${h.accel}`);
  parts.push(`supervisor=${h.supervisorPath}`);
  parts.push(h.supervisorAvailable ? "supervisor available" : "supervisor missing");
  parts.push(h.virtualizationSupported ? "virtualization supported" : "virtualization unsupported");
  parts.push(h.kvmAvailable ? "KVM available" : "KVM unavailable");
  parts.push(h.vsockAvailable ? "vsock available" : "vsock unavailable");
  return parts.join(", ");
}

function consoleLine(r: HostResponse): string {
  const c = r.host.checks.find((x) => x.name === "console");
  return r.host.consoleAvailable ? "available (interactive)" : `unavailable${c ? ` (${c.detail})` : ""}`;
}

function kernelLine(r: HostResponse): string {
  const k = r.kernel;
  switch (k.status) {
    case "installed":
      return `installed (${k.path})`;
    case "missing":
      return "not installed (run `microagent kernel install`)";
    default:
      return `error (${k.error ?? "unknown"})`;
  }
}

function networkingLine(r: HostResponse): string {
  const h = r.host;
  const user = h.userNetworkReady
    ? "user ready (the default; datapath userspace-stack: the supervisor's own network stack behind QEMU's -netdev stream socket; needs no root, no tap device, no nftables)"
    : "user not ready (the VMM is not usable)";
  const passt = h.userNetworkingAvailable ? `; passt ${h.userNetworkingVersion ?? ""} present (not used by user mode)`.replace("passt  ", "passt ") : "";
  return `isolated ${h.isolatedNetworkReady ? "ready" : "not ready"}; ${user}${passt}`;
}

function statusLine(r: HostResponse): string {
  const optionalFailed = r.host.checks.filter((c) => !c.required && !c.ok).length;
  const requiredFailed = r.host.checks.filter((c) => c.required && !c.ok).length;
  if (r.verdict === "ok") return "ok";
  if (r.verdict === "degraded") return `degraded (${optionalFailed} optional check${optionalFailed === 1 ? "" : "s"} failed)`;
  return `failed (${requiredFailed} required check${requiredFailed === 1 ? "" : "s"} failed)`;
}

function checkLines(checks: readonly HostCheck[], color: boolean): string[] {
  const width = Math.max(...checks.map((c) => c.label.length));
  const out: string[] = [];
  for (const c of checks) {
    const tag = c.ok ? "" : c.required ? " (required)" : " (optional)";
    out.push(`  ${glyph(c, color)} ${c.label.padEnd(width)}  ${c.detail}${tag}`);
    if (!c.ok && c.remediation) out.push(`      fix: ${c.remediation}`);
  }
  return out;
}

/** The seed's short summary, then every check with a fix line under each failing one. */
export function formatDoctorText(r: HostResponse, opts: FormatOptions = { color: false }): string {
  const lines = [
    `Backend: ${r.backend}`,
    `Status: ${statusLine(r)}`,
    `Host: ${hostLine(r)}`,
    `Console: ${consoleLine(r)}`,
    `Kernel: ${kernelLine(r)}`,
    `Networking: ${networkingLine(r)}`,
  ];
  lines.push("", "Checks:", ...checkLines(r.host.checks, opts.color));
  return `${lines.join("\n")}\n`;
}

function capLine(name: string, c: CapabilityReport): string {
  const state = !c.supported ? "unsupported" : c.ready ? "ready" : "supported, not ready";
  return `  ${name.padEnd(12)} ${state}${c.detail && c.detail !== "ready" ? ` (${c.detail})` : ""}`;
}

/** One backend's row, read off its capability objects: `linux-qemu  channel virtio-serial, disk qcow2/raw, ...`. */
function backendLine(b: BackendCapabilityRow): string {
  if (!b.implemented) return `  ${b.backend.padEnd(15)} not implemented in this build`;
  const parts = [
    `channel ${b.channel ?? "none"}`,
    `disk ${b.diskFormats.join("/") || "none"}`,
    `network isolated${b.networkAttachments.map((k) => `, ${k} socket`).join("")}`,
    `pause ${b.pause ? "yes" : "no"}`,
    `snapshot ${b.snapshot ? "yes" : "no"}`,
  ];
  return `  ${b.backend.padEnd(15)} ${parts.join("; ")}`;
}

/** The capability report: what the backend supports and whether each part is ready here. */
export function formatHostText(r: HostResponse, opts: FormatOptions = { color: false }): string {
  const h = r.host;
  const lines = [
    `Backend: ${r.backend}`,
    `Host: ${h.hostOs}/${h.hostArchitecture}, guest ${h.architecture}`,
    `VMM: ${h.binaryPath ? `${h.binaryPath}${h.binaryVersion ? ` (${h.binaryVersion})` : ""}` : "not found"}`,
  ];
  if (h.accel || h.accelReason) lines.push(`Accel: ${h.accel ?? "none"}${h.accelReason ? ` (${h.accelReason})` : ""}`);
  lines.push(`Kernel: ${kernelLine(r)}`);
  const caps = h.capabilities;
  if (caps) {
    lines.push(
      "Capabilities:",
      capLine("console", caps.console),
      capLine("exec", caps.exec),
      capLine("pause", caps.pauseResume),
      capLine("snapshots", caps.snapshots),
      capLine("isolated", caps.networking.isolated),
      capLine("user", caps.networking.user),
    );
  }
  if (r.backends.length) lines.push("Backends:", ...r.backends.map(backendLine));
  lines.push(`Health: ${statusLine(r)} (run \`microagent doctor\` for the fixes)`, "", "Probes:", ...checkLines(h.checks, opts.color));
  return `${lines.join("\n")}\n`;
}
