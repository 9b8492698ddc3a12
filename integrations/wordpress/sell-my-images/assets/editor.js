/**
 * Sell My Images: the "Sell high-res" toggle of the block editor's image block.
 *
 * The choice is the block attribute smiSell (kept in the block's comment, never in its
 * HTML); the plugin marks the image when the page is shown. Under the site's rule "every
 * image" (or an image carrying the seller's class under the rule "class") the image is for
 * sale anyway: the toggle shows it, switched on and greyed. Plain JavaScript on the
 * editor's wp.* globals: no build step.
 */
( function ( wp, settings ) {
	'use strict';

	var el = wp.element.createElement;
	var __ = wp.i18n.__;
	var sprintf = wp.i18n.sprintf;
	var config = settings || { rule: 'marked', cssClass: '', hasGateway: false };

	wp.hooks.addFilter(
		'blocks.registerBlockType',
		'sell-my-images/sell-attribute',
		function ( block, name ) {
			if ( name !== 'core/image' ) {
				return block;
			}
			var attributes = Object.assign( {}, block.attributes, {
				smiSell: { type: 'boolean', default: false },
			} );
			return Object.assign( {}, block, { attributes: attributes } );
		}
	);

	// Why the site's rule sells this image without the toggle ('' when it does not).
	function soldByRule( className ) {
		if ( config.rule === 'all' ) {
			return __( 'Every image in posts and pages is for sale (Settings → Sell My Images).', 'sell-my-images' );
		}
		var classes = String( className || '' ).split( /\s+/ );
		if ( config.rule === 'class' && config.cssClass && classes.indexOf( config.cssClass ) >= 0 ) {
			/* translators: %s: a CSS class name. */
			return sprintf( __( 'Images with the class %s are for sale.', 'sell-my-images' ), config.cssClass );
		}
		return '';
	}

	function help( rule, selling ) {
		if ( ! config.hasGateway ) {
			return __( 'Enter your gateway’s address in Settings → Sell My Images to start selling.', 'sell-my-images' );
		}
		if ( rule ) {
			return rule;
		}
		return selling
			? __( 'Visitors see a “Buy high-res” button under this image.', 'sell-my-images' )
			: __( 'Sell a 4x high-resolution version of this image.', 'sell-my-images' );
	}

	var withSellToggle = wp.compose.createHigherOrderComponent( function ( BlockEdit ) {
		return function ( props ) {
			if ( props.name !== 'core/image' ) {
				return el( BlockEdit, props );
			}
			var rule = soldByRule( props.attributes.className );
			var selling = Boolean( rule ) || Boolean( props.attributes.smiSell );
			return el(
				wp.element.Fragment,
				null,
				el( BlockEdit, props ),
				el(
					wp.blockEditor.InspectorControls,
					null,
					el(
						wp.components.PanelBody,
						{ title: __( 'Sell My Images', 'sell-my-images' ), initialOpen: true },
						el( wp.components.ToggleControl, {
							label: __( 'Sell high-res', 'sell-my-images' ),
							help: help( rule, selling ),
							checked: selling,
							disabled: Boolean( rule ),
							onChange: function ( value ) {
								props.setAttributes( { smiSell: value } );
							},
						} )
					)
				)
			);
		};
	}, 'withSellToggle' );

	wp.hooks.addFilter( 'editor.BlockEdit', 'sell-my-images/sell-toggle', withSellToggle );
} )( window.wp, window.smiEditorSettings );
