/**
 * The boot config: everything per-boot the host hands microagent-init right after the handshake
 * (never baked into the rootfs, so rootfs images stay byte-identical and shareable).
 */
import { z } from "zod";

/** Signal names the guest understands (with or without the SIG prefix), or a number 1-64. */
export const signalSchema = z.union([
  z.string().regex(/^(SIG)?[A-Z0-9]{2,8}$/, "a signal name such as SIGTERM"),
  z.number().int().min(1).max(64),
]);

/** "name", "uid", "name:group" or "uid:gid": resolved in the guest through /etc/passwd and /etc/group. */
export const userSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[^:\s]+(:[^:\s]+)?$/, "a user as name, uid, name:group or uid:gid");

export const envEntrySchema = z.string().max(128 * 1024).regex(/^[^=\0]+=/, "an environment entry KEY=VALUE");

export const bootFileSchema = z.object({
  /** Absolute path inside the guest; parents are created (0755). */
  path: z.string().startsWith("/").max(4096).refine((p) => !p.split("/").includes(".."), "no .. components"),
  /** Permission bits, e.g. 0o644. */
  mode: z.number().int().min(0).max(0o7777).default(0o644),
  uid: z.number().int().min(0).max(0x7fffffff).default(0),
  gid: z.number().int().min(0).max(0x7fffffff).default(0),
  contentBase64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "standard base64"),
});
export type BootFile = z.infer<typeof bootFileSchema>;

/**
 * One secret for /run/secrets (a tmpfs the guest mounts per boot): the file NAME, mode 0400, owned
 * by the workload's user. Only the supervisor adds these, in memory, per boot (never on disk).
 */
export const bootSecretSchema = z
  .object({
    /** A secret name (secrets/ref.ts): letters, digits and '_', not starting with a digit, at most 64. */
    name: z.string().max(64).regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "a secret name"),
    /** At most 64 KiB of value, base64. */
    contentBase64: z.string().min(1).max(Math.ceil((64 * 1024) / 3) * 4).regex(/^[A-Za-z0-9+/]*={0,2}$/, "standard base64"),
  })
  .strict();
export type BootSecret = z.infer<typeof bootSecretSchema>;

export const bootConfigSchema = z.object({
  /** The resolved Entrypoint+Cmd; absent or empty = idle (serve exec and console only). */
  argv: z.array(z.string().max(128 * 1024)).max(4096).optional(),
  /** KEY=VALUE entries, later ones win; the guest adds PATH and HOME when missing. */
  env: z.array(envEntrySchema).max(4096).default([]),
  /** Working directory of the workload (and the default for exec). */
  cwd: z.string().startsWith("/").max(4096).optional(),
  user: userSchema.optional(),
  files: z.array(bootFileSchema).max(1024).default([]),
  /** Shell commands run in order with `<shell> -c` before the workload; the first failure stops the boot. */
  setup: z.array(z.string().min(1).max(128 * 1024)).max(256).default([]),
  hostname: z
    .string()
    .max(63)
    .regex(/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/, "a hostname label")
    .optional(),
  stopSignal: signalSchema.default("SIGTERM"),
  shell: z.string().startsWith("/").max(4096).default("/bin/sh"),
  /** Also stream the workload's stdout/stderr to the host (it always goes to the serial console). */
  streamOutput: z.boolean().default(false),
  /** The NIC (user networking; absent = no NIC configured): static address, route, per-boot resolv.conf and hosts. */
  network: z
    .object({
      iface: z.string().regex(/^[a-z][a-z0-9]{0,14}$/, "an interface name such as eth0"),
      mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/),
      address: z.ipv4(),
      prefix: z.number().int().min(8).max(30),
      gateway: z.ipv4(),
      mtu: z.number().int().min(576).max(65520),
      /** Bind-mounted over /etc/resolv.conf (the image's file is never written). */
      resolvConf: z.string().max(64 * 1024),
      /** Bind-mounted over /etc/hosts. */
      hosts: z.string().max(1024 * 1024),
    })
    .strict()
    .optional(),
  /** Files for the /run/secrets tmpfs (absent: no tmpfs is mounted). */
  secrets: z.array(bootSecretSchema).max(64).optional(),
  /**
   * Egress mediation (guarded/strict): bind-mount each `source` (a boot-config file under
   * /run/microagent/egress/) over each of its `targets` that exists in the image (the distro CA
   * bundle paths), so clients that read the system store trust the workspace CA; the image's
   * files are never written. Absent: nothing is mounted.
   */
  egressTrust: z
    .object({
      bindMounts: z
        .array(
          z
            .object({
              source: z.string().regex(/^\/run\/microagent\/egress\/[A-Za-z0-9._-]{1,64}$/, "a file directly under /run/microagent/egress/"),
              targets: z
                .array(
                  z
                    .string()
                    .max(256)
                    .regex(/^\/etc\/[A-Za-z0-9._/-]+$/, "a path under /etc/")
                    .refine((p) => !p.split("/").includes("..") && !p.split("/").includes("."), "no . or .. components"),
                )
                .max(16),
            })
            .strict(),
        )
        .max(4),
    })
    .strict()
    .optional(),
});

/** What callers write (defaults optional). */
export type BootConfigInput = z.input<typeof bootConfigSchema>;
/** What goes on the wire (defaults applied). */
export type BootConfig = z.output<typeof bootConfigSchema>;

/** Validates and applies defaults; throws a ZodError naming the bad field. */
export function parseBootConfig(input: unknown): BootConfig {
  return bootConfigSchema.parse(input);
}

/** Normalises a stop signal to the wire form ("SIGTERM"). */
export function stopSignalName(sig: string | number): string {
  if (typeof sig === "number") return String(sig);
  return sig.startsWith("SIG") ? sig : `SIG${sig}`;
}
