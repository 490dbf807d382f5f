package com.mobile_distill.core

/**
 * A photo as the phone's gallery shows it. Cameras store pixels as the sensor read them and write
 * the turn in the JPEG's EXIF orientation tag; `BitmapFactory` ignores the tag, while the toolkit's
 * Python loader applies it (PIL's `ImageOps.exif_transpose`), so the gallery's embeddings and the
 * exported model's parity checks all saw upright images. Without this, a portrait photo picked in
 * the app would be embedded lying on its side.
 *
 * Framework-free so that it runs in the JVM golden tests: `android.media.ExifInterface(InputStream)`
 * needs API 24 above the API 23 stubs compiled against here, and androidx's needs Google's Maven.
 */
object Orientation {
    const val NORMAL = 1

    /** Upright pixels and their size (width and height swap for the quarter turns, 5..8). */
    class Pixels(val argb: IntArray, val width: Int, val height: Int)

    /** The EXIF orientation (1..8) of a JPEG file's bytes; [NORMAL] when it has none or is not a JPEG. */
    fun fromJpeg(bytes: ByteArray): Int {
        if (bytes.size < 4 || u8(bytes, 0) != 0xFF || u8(bytes, 1) != 0xD8) return NORMAL
        var pos = 2
        while (pos + 4 <= bytes.size && u8(bytes, pos) == 0xFF) {
            val marker = u8(bytes, pos + 1)
            if (marker == 0xDA || marker == 0xD9) break  // image data: EXIF comes before it
            val length = (u8(bytes, pos + 2) shl 8) or u8(bytes, pos + 3)
            val body = pos + 4
            if (marker == 0xE1 && length >= 8 && startsWith(bytes, body, EXIF_HEADER)) {
                return fromTiff(bytes, body + EXIF_HEADER.size, minOf(pos + 2 + length, bytes.size))
            }
            pos += 2 + length
        }
        return NORMAL
    }

    /** The first IFD's orientation tag (0x0112) of the TIFF block at [start, end). */
    private fun fromTiff(b: ByteArray, start: Int, end: Int): Int {
        if (end - start < 8) return NORMAL
        val little = when {
            u8(b, start) == 0x49 && u8(b, start + 1) == 0x49 -> true   // "II"
            u8(b, start) == 0x4D && u8(b, start + 1) == 0x4D -> false  // "MM"
            else -> return NORMAL
        }
        fun u16(at: Int) = if (little) u8(b, at) or (u8(b, at + 1) shl 8) else (u8(b, at) shl 8) or u8(b, at + 1)
        fun u32(at: Int) = if (little) u16(at).toLong() or (u16(at + 2).toLong() shl 16) else (u16(at).toLong() shl 16) or u16(at + 2).toLong()
        val ifd = start + u32(start + 4)
        if (ifd + 2 > end) return NORMAL
        val count = u16(ifd.toInt())
        for (i in 0 until count) {
            val entry = ifd.toInt() + 2 + 12 * i
            if (entry + 12 > end) break
            if (u16(entry) == 0x0112) {
                val value = u16(entry + 8)  // a SHORT: held in the first two bytes of the value field
                return if (value in 1..8) value else NORMAL
            }
        }
        return NORMAL
    }

    /** Row-major ARGB pixels as stored -> as shown, for EXIF orientation [orientation]. */
    fun upright(argb: IntArray, width: Int, height: Int, orientation: Int): Pixels {
        require(argb.size == width * height) { "got ${argb.size} pixels for $width x $height" }
        if (orientation !in 2..8) return Pixels(argb, width, height)
        val swap = orientation >= 5
        val w = if (swap) height else width
        val h = if (swap) width else height
        val out = IntArray(argb.size)
        for (y in 0 until h) {
            for (x in 0 until w) {
                // the stored pixel shown at (x, y), per the EXIF 2.3 definitions of the eight values
                val (sx, sy) = when (orientation) {
                    2 -> Pair(width - 1 - x, y)               // mirrored left-right
                    3 -> Pair(width - 1 - x, height - 1 - y)  // turned 180
                    4 -> Pair(x, height - 1 - y)              // mirrored top-bottom
                    5 -> Pair(y, x)                           // transposed
                    6 -> Pair(y, height - 1 - x)              // turned 90 clockwise to show
                    7 -> Pair(width - 1 - y, height - 1 - x)  // transversed
                    else -> Pair(width - 1 - y, x)            // 8: turned 90 counter-clockwise to show
                }
                out[y * w + x] = argb[sy * width + sx]
            }
        }
        return Pixels(out, w, h)
    }

    private val EXIF_HEADER = byteArrayOf(0x45, 0x78, 0x69, 0x66, 0, 0)  // "Exif\0\0"

    private fun u8(b: ByteArray, at: Int) = b[at].toInt() and 0xFF

    private fun startsWith(b: ByteArray, at: Int, prefix: ByteArray) =
        at + prefix.size <= b.size && prefix.indices.all { b[at + it] == prefix[it] }
}
