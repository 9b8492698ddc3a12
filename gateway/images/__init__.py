"""The images sold: fetched from the hosts allowed (``sources``), stored with room to spare
(``storing``), and their free previews (``previews``)."""
