/**
 * The workspace disk's size. The disk itself is the backend's (its `disk` capability makes it, in the
 * format it boots from; linux-qemu: a qcow2 overlay over the shared base rootfs), reached through the
 * providers seam (providers.ts).
 */

/**
 * The disk size a workspace really gets: what was asked, but never less than the base rootfs (a
 * disk smaller than its base would cut the filesystem off). Pure: create reports it.
 */
export function overlaySizeMib(requestedMib: number, baseSizeMib = 0): { sizeMib: number; raised: boolean } {
  const floor = Math.ceil(baseSizeMib);
  return requestedMib >= floor ? { sizeMib: requestedMib, raised: false } : { sizeMib: floor, raised: true };
}
