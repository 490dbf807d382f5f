package com.mobile_distill.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test
import java.nio.ByteOrder

class PreprocessTest {
    private fun argb(r: Int, g: Int, b: Int) = (0xFF shl 24) or (r shl 16) or (g shl 8) or b

    @Test
    fun boxAverageRoundsHalfUpAndCropsTheCentre() {
        // 4 x 2 image: the centre 2 x 2 square is columns 1..2; averaged to 1 x 1.
        val px = intArrayOf(argb(255, 0, 0), argb(1, 2, 3), argb(2, 3, 4), argb(255, 0, 0),
                            argb(1, 2, 3), argb(2, 3, 4), argb(1, 2, 3), argb(255, 0, 0))
        val out = Preprocess.resize(px, 4, 2, 1)
        // mean of (1,2,1,2)=1.5 -> 2 ; (2,3,2,3)=2.5 -> 3 ; (3,4,3,4)=3.5 -> 4
        assertEquals(argb(2, 3, 4), out[0])
    }

    @Test
    fun upscalingRepeatsPixels() {
        val px = intArrayOf(argb(10, 20, 30))
        assertArrayEquals(IntArray(4) { argb(10, 20, 30) }, Preprocess.resize(px, 1, 1, 2))
    }

    @Test
    fun float32NhwcIsRgbOver255() {
        val spec = InputSpec(1, Layout.NHWC, DType.FLOAT32)
        val buf = Preprocess.toInput(intArrayOf(argb(255, 51, 0)), spec)
        assertEquals(ByteOrder.LITTLE_ENDIAN, buf.order())
        assertEquals(1f, buf.getFloat(0), 0f)
        assertEquals(51 / 255f, buf.getFloat(4), 0f)
        assertEquals(0f, buf.getFloat(8), 0f)
    }

    @Test
    fun uint8NchwIsPlanar() {
        val spec = InputSpec(2, Layout.NCHW, DType.UINT8)
        val px = IntArray(4) { argb(it, 10 + it, 200 + it) }
        val buf = Preprocess.toInput(px, spec)
        val bytes = ByteArray(12).also { buf.get(it) }.map { it.toInt() and 0xFF }
        assertEquals(listOf(0, 1, 2, 3, 10, 11, 12, 13, 200, 201, 202, 203), bytes)
    }

    @Test(expected = IllegalArgumentException::class)
    fun wrongPixelCountIsRefused() {
        Preprocess.toInput(IntArray(3), InputSpec(2, Layout.NHWC, DType.UINT8))
    }
}
