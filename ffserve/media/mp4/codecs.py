"""What a codec's own configuration record or bitstream header says about a stream.

Pure functions over bytes, no file and no container: an MP4 sample entry's avcC, esds,
dOps, dfLa or alac box, or the first bytes of a sample (an H.263 picture header, an
MPEG audio frame header), in; the profile, picture size, sample rate and channel count
that FFmpeg's decoder would report, out. They sit apart from `ffserve.media.mp4.streams`, which
finds these bytes in the boxes, because they follow the codec specifications (H.264,
H.263, MPEG-4 Systems and Audio, Opus, FLAC, ALAC) rather than the container's, and so
can be read and tested on their own.

The input is untrusted, and each answer must be exactly FFmpeg's: anything unusual, or
whose answer only decoding would settle, is `Unsure` rather than a guess.

Errors: `Unsure`; IndexError and struct.error when the bytes end early. The caller
treats all of them alike (`probe_isobmff` then leaves the file to ffprobe).
"""

from __future__ import annotations

import struct

# esds objectTypeIndication -> codec for an mp4a entry.
MP4A_OBJECT_TYPES = {0x40: "aac", 0x66: "aac", 0x67: "aac", 0x68: "aac", 0x69: "mp3", 0x6B: "mp3"}
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000)
AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8}

# (profile_idc, constraint flag that FFmpeg folds in) -> FFmpeg's profile name.
H264_PROFILES = {
    66: ("Baseline", 1, "Constrained Baseline"),
    77: ("Main", None, ""),
    88: ("Extended", None, ""),
    100: ("High", None, ""),
    110: ("High 10", 3, "High 10 Intra"),
    122: ("High 4:2:2", 3, "High 4:2:2 Intra"),
    244: ("High 4:4:4 Predictive", 3, "High 4:4:4 Intra"),
}
H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
H263_SIZES = {1: (128, 96), 2: (176, 144), 3: (352, 288), 4: (704, 576), 5: (1408, 1152)}


class Unsure(Exception):
    """These bytes are unusual, unsupported or malformed: the answer needs ffprobe."""


class _Bits:
    """MSB-first bit reader over an RBSP (emulation prevention bytes already removed)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self.left:
            raise Unsure("header ends early")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise Unsure("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def unescape(nal: bytes) -> bytes:
    """A NAL unit's RBSP: its emulation prevention bytes (00 00 03) taken out."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def avcc_sps(avcc: bytes) -> tuple[int, bytes]:
    """The NAL length size and the one SPS NAL unit of an avcC (AVCDecoderConfigurationRecord).

    Several SPSs would leave FFmpeg to choose among them, so only exactly one is taken.
    """
    if len(avcc) < 7 or avcc[0] != 1:
        raise Unsure("avcC")
    length_size = (avcc[4] & 3) + 1
    if avcc[5] & 0x1F != 1:
        raise Unsure("not exactly one SPS")
    (sps_len,) = struct.unpack_from(">H", avcc, 6)
    sps = avcc[8 : 8 + sps_len]
    if len(sps) != sps_len or sps_len < 4 or sps[0] & 0x1F != 7:
        raise Unsure("SPS")
    return length_size, sps


def h264_sps(rbsp: bytes) -> tuple[str, tuple[int, int]]:
    """FFmpeg's profile name and the cropped picture size from an H.264 SPS's RBSP.

    The size is the decoder's, so that a file cannot understate it in its container.
    Left or top cropping, which FFmpeg may realign, is Unsure.
    """
    bits = _Bits(rbsp)
    profile_idc = bits.u(8)
    constraints = bits.u(8)
    bits.u(8)  # level
    bits.ue()  # seq_parameter_set_id
    chroma_format, separate_planes = 1, 0
    if profile_idc in H264_HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format > 3:
            raise Unsure("chroma format")
        if chroma_format == 3:
            separate_planes = bits.u(1)
        if bits.ue() > 6 or bits.ue() > 6:
            raise Unsure("bit depth")
        bits.u(1)  # qpprime_y_zero_transform_bypass
        if bits.u(1):  # seq_scaling_matrix_present
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + bits.se()) % 256
                        last = nxt or last
    if bits.ue() > 12:  # log2_max_frame_num_minus4
        raise Unsure("frame num")
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
        if cycle > 255:
            raise Unsure("poc cycle")
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise Unsure("poc type")
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field
    bits.u(1)  # direct_8x8_inference
    width, height = 16 * width_mbs, 16 * height_units * (2 - frame_mbs_only)
    if bits.u(1):  # frame_cropping
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        if left or top:
            raise Unsure("left or top cropping")  # FFmpeg may realign those
        mono_or_planes = chroma_format == 0 or separate_planes
        unit_x = 1 if mono_or_planes or chroma_format == 3 else 2
        unit_y = (2 - frame_mbs_only) * (1 if mono_or_planes or chroma_format != 1 else 2)
        width -= unit_x * right
        height -= unit_y * bottom
        if width <= 0 or height <= 0:
            raise Unsure("cropping")
    name = H264_PROFILES.get(profile_idc)
    if name is None:
        raise Unsure("H.264 profile")
    plain, flag, flagged = name
    profile = flagged if flag is not None and constraints & (0x80 >> flag) else plain
    return profile, (width, height)


def h263_picture_size(picture: bytes) -> tuple[int, int]:
    """The picture size in an H.263 picture header (the start of a sample).

    Only the five standard source formats: a custom or extended (PLUSPTYPE) size is Unsure.
    """
    bits = _Bits(picture[:8])
    if bits.u(22) != 0x20:
        raise Unsure("H.263 start code")
    bits.u(8)  # temporal reference
    if bits.u(2) != 0b10:
        raise Unsure("H.263 PTYPE")
    bits.u(3)  # split screen, document camera, freeze release
    size = H263_SIZES.get(bits.u(3))
    if size is None:
        raise Unsure("H.263 custom or extended size")
    return size


def mp4a_esds(esds: bytes) -> tuple[str, str | None, int, int]:
    """Codec, profile, sample rate and channels from an esds (MPEG-4 ES descriptor).

    For MP3 only the codec is known here (rate and channels 0): the first frame's header
    has the last word, see `mp3_header`.
    """
    if esds[:4] != b"\0\0\0\0":
        raise Unsure("esds version")
    pos, end = _descriptor(esds, 4, 0x03)
    flags = esds[pos + 2]
    pos += 3
    if flags & 0x80:
        pos += 2
    if flags & 0x40:
        pos += 1 + esds[pos]
    if flags & 0x20:
        pos += 2
    pos, config_end = _descriptor(esds, pos, 0x04)
    object_type = esds[pos]
    codec = MP4A_OBJECT_TYPES.get(object_type)
    if codec is None:
        raise Unsure(f"mp4a object type {object_type:#x}")
    if codec == "mp3":
        return codec, None, 0, 0
    asc_pos, asc_end = _descriptor(esds, pos + 13, 0x05)
    if config_end > end or asc_end > config_end:
        raise Unsure("esds nesting")
    profile, sample_rate, channels = aac_config(esds[asc_pos:asc_end])
    return codec, profile, sample_rate, channels


def _descriptor(data: bytes, pos: int, tag: int) -> tuple[int, int]:
    """The payload span of the MPEG-4 descriptor `tag` at pos (expandable size, 1-4 bytes)."""
    if data[pos] != tag:
        raise Unsure(f"expected descriptor {tag:#x}")
    pos += 1
    length = 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        length = length << 7 | byte & 0x7F
        if not byte & 0x80:
            break
    if pos + length > len(data):
        raise Unsure("descriptor overruns")
    return pos, pos + length


def aac_config(asc: bytes) -> tuple[str, int, int]:
    """Profile, sample rate and channels of an AudioSpecificConfig, for plain AAC-LC only.

    Anything that is, or may turn into, HE-AAC when decoded needs ffprobe. FFmpeg's own
    encoder signals "no SBR" explicitly (a sync extension with sbrPresentFlag 0), and then
    the decoder ignores any SBR data. Without that, SBR may still be found in the first
    frame at a low sample rate (implicit HE-AAC), which changes the profile and doubles
    the rate ffprobe reports.
    """
    if len(asc) not in (2, 5):
        raise Unsure("AudioSpecificConfig length")
    bits = _Bits(asc)
    object_type, rate_index, channel_config, ga = bits.u(5), bits.u(4), bits.u(4), bits.u(3)
    if object_type != 2 or ga != 0:
        raise Unsure("not plain AAC-LC")
    if rate_index >= len(AAC_SAMPLE_RATES):
        raise Unsure("sample rate index")
    sample_rate = AAC_SAMPLE_RATES[rate_index]
    if len(asc) == 5:
        sync, extension, sbr_present, padding = bits.u(11), bits.u(5), bits.u(1), bits.u(7)
        if (sync, extension, sbr_present, padding) != (0x2B7, 5, 0, 0):
            raise Unsure("AAC extension other than 'no SBR'")
    elif sample_rate <= 24000:
        raise Unsure("sample rate where SBR may be implicit")
    channels = AAC_CHANNELS.get(channel_config)
    if channels is None:
        raise Unsure("channel configuration")
    return "LC", sample_rate, channels


def mp3_header(frame: bytes) -> tuple[int, int]:
    """Sample rate and channels of the MPEG audio layer III frame header that frame starts with."""
    (word,) = struct.unpack_from(">I", frame)
    version, layer, rate_index = word >> 19 & 3, word >> 17 & 3, word >> 10 & 3
    if word >> 21 != 0x7FF or version == 1 or layer != 1 or rate_index == 3:
        raise Unsure("not an MPEG audio layer III frame")
    rate = (44100, 48000, 32000)[rate_index] >> {3: 0, 2: 1, 0: 2}[version]
    return rate, 1 if word >> 6 & 3 == 3 else 2


def opus_channels(dops: bytes) -> int:
    """The channel count of a dOps (Opus specific box); its rate is always 48000.

    Only channel mapping family 0 (mono or stereo, no mapping table).
    """
    if len(dops) < 11 or dops[0] != 0 or dops[10] != 0:
        raise Unsure("Opus with a channel mapping family")
    return dops[1]


def flac_streaminfo(dfla: bytes) -> tuple[int, int]:
    """Sample rate and channels of a dfLa (FLAC specific box) whose first block is STREAMINFO."""
    if len(dfla) < 4 + 4 + 34 or dfla[:4] != b"\0\0\0\0" or dfla[4] & 0x7F != 0:
        raise Unsure("dfLa without STREAMINFO first")
    bits = _Bits(dfla[8 + 10 : 8 + 13])
    return bits.u(20), bits.u(3) + 1


def alac_config(config: bytes) -> tuple[int, int]:
    """Sample rate and channels of an ALACSpecificConfig (the payload of the inner alac box)."""
    if len(config) != 28:
        raise Unsure("ALAC config")
    return struct.unpack_from(">I", config, 24)[0], config[13]
