package com.mobile_distill.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class OrientationTest {
    /** A JPEG header with an APP1 EXIF block whose TIFF is big-endian ("MM"; PIL writes "II"). */
    private fun bigEndianJpeg(orientation: Int): ByteArray {
        val tiff = byteArrayOf(0x4D, 0x4D, 0, 42, 0, 0, 0, 8,  // "MM", 42, first IFD at 8
            0, 1,                                                 // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation.toByte(), 0, 0,  // 0x0112 SHORT x1 = orientation
            0, 0, 0, 0)                                           // no next IFD
        val body = byteArrayOf(0x45, 0x78, 0x69, 0x66, 0, 0) + tiff
        val length = body.size + 2
        return byteArrayOf(0xFF.toByte(), 0xD8.toByte(), 0xFF.toByte(), 0xE1.toByte(), (length shr 8).toByte(), length.toByte()) +
            body + byteArrayOf(0xFF.toByte(), 0xDA.toByte())
    }

    @Test
    fun readsBigEndianExifAndIgnoresWhatIsNotThere() {
        assertEquals(6, Orientation.fromJpeg(bigEndianJpeg(6)))
        assertEquals(Orientation.NORMAL, Orientation.fromJpeg(bigEndianJpeg(9)))  // out of range
        assertEquals(Orientation.NORMAL, Orientation.fromJpeg(byteArrayOf(0x89.toByte(), 0x50, 0x4E, 0x47)))  // a PNG
        assertEquals(Orientation.NORMAL, Orientation.fromJpeg(bigEndianJpeg(6).copyOf(20)))  // truncated
    }

    @Test
    fun quarterTurnSwapsTheSides() {
        // 3 x 2 stored: a b c / d e f; orientation 6 shows it turned 90 degrees clockwise: d a / e b / f c
        val up = Orientation.upright(intArrayOf(1, 2, 3, 4, 5, 6), 3, 2, 6)
        assertEquals(2, up.width)
        assertEquals(3, up.height)
        assertArrayEquals(intArrayOf(4, 1, 5, 2, 6, 3), up.argb)
    }
}
