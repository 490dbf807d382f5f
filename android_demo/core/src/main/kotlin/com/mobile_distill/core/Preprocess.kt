package com.mobile_distill.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Pixels to model input, with integer arithmetic only so that the Python side
 * (`mobile_distill.export.android.box_resize` / `to_input`) produces the same bytes.
 *
 * Rule: centre-crop the largest square, then box-average it to size x size (output pixel i
 * averages source columns [i*S/size, max((i+1)*S/size, i*S/size + 1)), the same for rows, with
 * the mean rounded half up), then RGB in [0, 1] float32 (v / 255f) or raw uint8, in the model's
 * layout. Alpha is ignored (the toolkit composites transparency on white before export).
 */
object Preprocess {
    /** ARGB pixels (row-major, `width` x `height`) -> `size` x `size` ARGB pixels. */
    fun resize(argb: IntArray, width: Int, height: Int, size: Int): IntArray {
        require(argb.size == width * height) { "got ${argb.size} pixels for $width x $height" }
        val side = minOf(width, height)
        val x0 = (width - side) / 2
        val y0 = (height - side) / 2
        val out = IntArray(size * size)
        for (oy in 0 until size) {
            val sy0 = oy * side / size
            val sy1 = maxOf((oy + 1) * side / size, sy0 + 1)
            for (ox in 0 until size) {
                val sx0 = ox * side / size
                val sx1 = maxOf((ox + 1) * side / size, sx0 + 1)
                var r = 0L
                var g = 0L
                var b = 0L
                for (sy in sy0 until sy1) {
                    for (sx in sx0 until sx1) {
                        val p = argb[(y0 + sy) * width + x0 + sx]
                        r += (p shr 16) and 0xFF
                        g += (p shr 8) and 0xFF
                        b += p and 0xFF
                    }
                }
                val n = ((sy1 - sy0) * (sx1 - sx0)).toLong()
                out[oy * size + ox] = (0xFF shl 24) or (roundDiv(r, n) shl 16) or (roundDiv(g, n) shl 8) or roundDiv(b, n)
            }
        }
        return out
    }

    private fun roundDiv(sum: Long, n: Long): Int = ((2 * sum + n) / (2 * n)).toInt()

    /** `size` x `size` ARGB pixels -> the model's input buffer (little-endian, direct). */
    fun toInput(argb: IntArray, spec: InputSpec): ByteBuffer {
        val s = spec.size
        require(argb.size == s * s) { "expected ${s * s} pixels, got ${argb.size}" }
        val buf = ByteBuffer.allocateDirect(spec.byteCount).order(ByteOrder.LITTLE_ENDIAN)
        fun put(v: Int) {
            if (spec.dtype == DType.FLOAT32) buf.putFloat(v / 255f) else buf.put(v.toByte())
        }
        if (spec.layout == Layout.NHWC) {
            for (p in argb) {
                put((p shr 16) and 0xFF); put((p shr 8) and 0xFF); put(p and 0xFF)
            }
        } else {
            for (shift in intArrayOf(16, 8, 0)) for (p in argb) put((p shr shift) and 0xFF)
        }
        buf.rewind()
        return buf
    }

    /** Raw uint8 RGB (NHWC, as `mdistill bench --adb` pushes it) of one image -> ARGB pixels. */
    fun rgbBytesToArgb(rgb: ByteArray, offset: Int, pixelCount: Int): IntArray = IntArray(pixelCount) { i ->
        val o = offset + 3 * i
        (0xFF shl 24) or ((rgb[o].toInt() and 0xFF) shl 16) or ((rgb[o + 1].toInt() and 0xFF) shl 8) or
            (rgb[o + 2].toInt() and 0xFF)
    }
}
