export * from './types';
export { VirtioFsShare, type VirtioFsShareOptions } from './virtiofs-share';
export { mountsUnder, parseMountInfo, type MountInfo } from './mount';
export { volumeName } from './validate';
export { guestVolumeMount, isBindMount, shareVolumes, type OciMount } from './volumes';
